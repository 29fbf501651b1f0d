"""Self-test: the config, each wired sensor read once through the board layer, the link checked.

Run by the technician's tools over the REPL (`kerbline device selftest`), never by the application:
it is listed in firmware_build.HOST_ONLY, so it is not kept on flash (the board's .mpy budget has no
room for it) and costs nothing until a technician sends it. It drives no output (relay, PWM).

One line per check, for the tools to parse (the detail never holds the key or a password):
    SELFTEST <check> PASS|FAIL <detail>
    SELFTEST END <number of failed checks>
A check that raises is a FAIL with the exception, and the next check still runs.
"""
_failed = 0


def _line(name, ok, detail):
    global _failed
    if not ok:
        _failed += 1
    print("SELFTEST %s %s %s" % (name, "PASS" if ok else "FAIL", detail))


def _check(name, fn, *args):
    try:
        ok, detail = fn(*args)
    except Exception as e:
        ok, detail = False, "%s %s" % (type(e).__name__, e)
    _line(name, ok, detail)


def _temp(board, cfg):
    t16 = board.temp_16(cfg["pins"]["temp"])
    if t16 is None:
        return False, "no answer from the DS18B20 on GPIO %d" % cfg["pins"]["temp"]
    return True, "%d.%02d C" % (t16 // 16, t16 % 16 * 100 // 16)


def _sonar(board, cfg):
    from kerbline.sensors.ultrasonic import Sonar

    sonar = Sonar(board, cfg)
    got = sonar.sample(None)
    if got is None:
        return False, sonar.fault
    return True, "%d mm, fill %d %%" % got


def _adc(board, cfg, pin, gain, unit, zero=0):
    from kerbline.sensors import scaled

    mv = board.adc_mv(cfg["pins"][pin])
    return True, "%d %s (%d mV at GPIO %d)" % (scaled(mv, cfg[gain], zero), unit, mv, cfg["pins"][pin])


def _switch(board, cfg, pin, active, idle):
    on = board.pin_value(cfg["pins"][pin]) == 1
    return not (on and pin == "tilt"), active if on else idle  # a bin is installed standing upright


def _bh1750(board, cfg):
    from kerbline.sensors.light import Bh1750

    lux = Bh1750(board, cfg["i2c_tries"]).lux()
    if lux is None:
        return False, "no answer on I2C (SDA GPIO %d, SCL GPIO %d)" % (cfg["pins"]["sda"], cfg["pins"]["scl"])
    return True, "%d lx" % lux


def _ldr(board, cfg):
    from kerbline.sensors.light import ldr_lux

    mv = board.adc_mv(cfg["pins"]["ldr"])
    return True, "%d lx (%d mV)" % (ldr_lux(mv, cfg["ldr_table"]), mv)


def _link(board, cfg):
    link = cfg["link"]
    if link["type"] == "serial":
        board.uart(link["uart"], link["baud"], link["tx"], link["rx"])
        return True, "UART %d open at %d baud (TX GPIO %d, RX GPIO %d)" % (
            link["uart"], link["baud"], link["tx"], link["rx"])
    if not board.network_up(15000):
        return False, "WLAN %s not joined" % link.get("ssid", "(no ssid)")
    import socket

    s = socket.socket()
    try:
        s.settimeout(5)
        s.connect(socket.getaddrinfo(link["host"], link["port"])[0][-1])
    finally:
        s.close()
    return True, "broker %s:%d reachable" % (link["host"], link["port"])


def run():
    global _failed
    _failed = 0
    from kerbline import config

    try:
        cfg = config.load()
        config.take_key(cfg)
    except Exception as e:
        _line("config", False, str(e))
        print("SELFTEST END %d" % _failed)
        return
    _line("config", True, "%s (%s)" % (cfg["id"], cfg["kind"]))
    try:
        from kerbline.board import load

        board = load(cfg)
    except Exception as e:
        _line("board", False, "%s %s" % (type(e).__name__, e))
        print("SELFTEST END %d" % _failed)
        return
    import gc

    gc.collect()
    _line("heap", True, "%d bytes free" % gc.mem_free())
    pins = cfg["pins"]
    if "temp" in pins:
        _check("temp", _temp, board, cfg)
    if cfg["kind"] == "bin":
        _check("sonar", _sonar, board, cfg)
        if "batt" in pins:
            _check("batt", _adc, board, cfg, "batt", "batt_gain", "mV")
        for pin, active, idle in (("tilt", "tilted", "upright"), ("lid", "open", "closed")):
            if pin in pins:
                _check(pin, _switch, board, cfg, pin, active, idle)
    else:
        if "scl" in pins:
            _check("bh1750", _bh1750, board, cfg)
        if "ldr" in pins:
            _check("ldr", _ldr, board, cfg)
        if "volt" in pins:
            _check("volt", _adc, board, cfg, "volt", "volt_gain", "V")
        if "curr" in pins:
            _check("curr", _adc, board, cfg, "curr", "curr_gain", "mA", cfg["curr_zero_mv"])
    _check("link", _link, board, cfg)
    print("SELFTEST END %d" % _failed)
