"""What boot.py and main.py run: the skip pin, safe mode, the crash net around the application.

boot.py calls `check_skip()`: the skip pin (config pins.skip, default GPIO 0, the ESP32's BOOT button)
read low at boot means a technician is holding it, and `main()` then returns at once, leaving the REPL.
It reads only the raw config and the pin, and never raises, so a broken config cannot lock anyone out.

main.py calls `main()`:
1. load and check /config.json; an error -> safe mode with the message (never a crash loop)
2. a watchdog reset since the last boot counts as a crash
3. `crash_n` crashes with no healthy run between them -> safe mode, with the last crash's reason
4. run the bin or light cycle; they return only by deep sleep or reset (board methods that end the run)
5. any exception out of the application: its one-line description goes to the crash log, then reset.
   Ctrl-C (KeyboardInterrupt) is not a crash: the REPL gets control.
The board object is made once per boot and shared by boot.py and main.py (on the sim board, reading
the reset cause consumes it).
"""
from kerbline.compat import const

board = None
_skip = False
_SKIP_PIN = const(0)  # the ESP32 DevKit's BOOT button, pulled up, low while pressed


def board_for(cfg):
    global board
    if board is None:
        from kerbline.board import load

        board = load(cfg)
    return board


def check_skip():
    global _skip
    from kerbline import config

    try:
        try:
            raw = config.read()
        except config.ConfigError:
            raw = {}
        pins = raw.get("pins") if isinstance(raw.get("pins"), dict) else {}
        _skip = board_for(raw).pin_value(pins.get("skip", _SKIP_PIN)) == 0
    except Exception as e:
        print("boot: skip pin not read (%r); starting normally" % (e,))
    if _skip:
        print("boot: skip pin held: main.py will not start the application; the REPL is free")


def _prepare():
    """(board, cfg, key, crashes so far) for the application, or None after entering safe mode."""
    from kerbline import config, crashlog

    try:
        cfg = config.load()
    except config.ConfigError as e:
        from kerbline import safemode

        safemode.enter("config: %s" % e)
        return None
    board = board_for(cfg)
    from kerbline.board import WDT

    if board.reset_cause() == WDT:
        crashlog.record("watchdog reset: the main loop stopped making progress")
    crashes = crashlog.count()
    if crashes >= cfg["crash_n"]:
        from kerbline import safemode

        safemode.enter("%d crashes in a row, last: %s" % (crashes, crashlog.last()), cfg, board)
        return None
    return board, cfg, config.take_key(cfg), crashes


def main():
    if _skip:
        return
    from kerbline.mem import drop

    boot = 0
    try:
        ready = _prepare()
        drop("kerbline.config", "kerbline.crashlog", "kerbline.safemode")
        if ready is None:
            return
        board, cfg, key, crashes = ready
        ready = None
        from kerbline.app import App

        app = App(board, cfg, key)
        app.crashes = crashes
        boot = app.state.boot
        if cfg["kind"] == "bin":
            from kerbline.bin_cycle import run
        else:
            from kerbline.light_cycle import run
        run(app)
    except KeyboardInterrupt:
        print("stopped by Ctrl-C")
    except Exception as e:
        from kerbline import crashlog

        reason = crashlog.describe(e)
        print("crash:", reason)
        crashlog.record(reason, boot)
        board_for({}).reset()
