"""The device config: one JSON file on flash, written at provisioning, checked at every boot.

    {"id": "bin-0042", "kind": "bin", "key": "<64 hex digits>",
     "link": {"type": "serial", "uart": 1, "baud": 115200, "tx": 17, "rx": 16},
     "pins": {"trig": 5, "echo": 18, ...}, "interval": 900, "full_at": 80, ...}

`load()` returns the config as a dict with every setting filled in from the defaults, or raises
ConfigError with a message a technician can act on (main.py then boots into safe mode; it never
crash-loops on a bad config). Unknown keys are errors: a misspelt setting must not silently keep its
default. The key is taken out of the dict (`take_key`) before anything else sees it, so a printed config
never shows it.

Settings are integers with a range (the table below); the `config` command changes them with `apply()`, which
checks every value first and then rewrites the file atomically (temp file + rename: a power cut leaves
the old file or the new one, never half of one).
"""

import json

from binascii import unhexlify

# One line per setting: name, min, max, bin default, light default ("-": not a setting of that kind).
# Kept as one string and parsed on demand: a dict of tuples would cost several KB of RAM, and on a
# 64 KB heap even each module-level name counts (so the helpers below are few and the lists inline).
_TABLE = """
interval 60 86400 900 -
wake_s 2 120 20 -
full_at 10 100 80 -
depth_mm 100 5000 1000 -
offset_mm 0 2000 100 -
min_mm 20 1000 20 -
max_mm 200 8000 4000 -
pings 1 15 5 -
tol_mm 2 500 30 -
stuck_n 2 100 8 -
batt_gain 1 100000 2000 -
lowbatt_mv 2000 15000 3400 -
fire_at 30 125 70 70
sample_s 1 600 - 5
report_s 10 86400 - 900
lux_on 0 100000 - 20
lux_off 0 100000 - 50
switch_n 1 20 - 2
dim 0 100 - 100
night_start 0 1439 - 0
night_end 0 1439 - 300
night_dim 0 100 - 50
dark_start 0 1439 - 1080
dark_end 0 1439 - 420
tz_min -720 840 - 0
lamp_min_ma 0 100000 - 50
volt_gain 1 1000000 - 200
curr_gain 1 1000000 - 5405
curr_zero_mv 0 3300 - 0
i2c_tries 1 10 - 3
queue_bytes 1024 1048576 16384 16384
wdt_ms 5000 120000 30000 30000
crash_n 2 20 3 3
healthy_s 10 86400 300 300
"""


class ConfigError(Exception):
    pass


def spec(name, kind):
    """(min, max, default) of a setting for a kind, or None when the kind has no such setting."""
    at = _TABLE.find("\n" + name + " ")
    if at < 0:
        return None
    fields = _TABLE[at + 1:_TABLE.find("\n", at + 1)].split()
    default = fields[3 if kind == "bin" else 4]
    return None if default == "-" else (int(fields[1]), int(fields[2]), int(default))


def _int(name, value, low, high=None):
    """`value` checked as an integer in low..high, or (high None) as text of 1 to `low` characters."""
    if high is None:
        if not isinstance(value, str) or not 0 < len(value) <= low:
            raise ConfigError("'%s' must be text of 1 to %d characters" % (name, low))
    elif not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError("'%s' must be an integer %d..%d, got %r" % (name, low, high, value))
    return value


def read(path="config.json"):
    """The file's JSON object, unchecked; ConfigError when it is missing or not JSON."""
    shown = "/" + path.lstrip("/")  # a relative path is the flash root's file (the cwd is "/" at boot)
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("%s is missing: provision the device (see docs/firmware.md)" % shown)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % shown)
    if not isinstance(raw, dict):
        raise ConfigError("%s must hold a JSON object" % shown)
    return raw


def load(path="config.json"):
    """The checked config with defaults filled in (ConfigError says what is wrong)."""
    return check(read(path))


def check(raw):
    """The config `raw` (a parsed JSON object) checked, with every default filled in."""
    from kerbline.wire.cose import valid_device_id

    for name in raw:
        if name not in ("id", "kind", "key", "board", "link", "pins", "sim", "ldr_table") and spec(name, "bin") \
                is None and spec(name, "light") is None:
            raise ConfigError("unknown setting '%s'" % name)
    device_id = raw.get("id")
    if not isinstance(device_id, str) or not valid_device_id(device_id):
        raise ConfigError("'id' must be 1 to 32 characters of a-z, 0-9 and '-'")
    kind = raw.get("kind")
    if kind not in ("bin", "light"):
        raise ConfigError("'kind' must be 'bin' or 'light', got %r" % (kind,))
    key = raw.get("key")
    try:
        if not isinstance(key, str) or len(key) != 64:
            raise ValueError
        unhexlify(key)
    except ValueError:
        raise ConfigError("'key' must be 64 hex digits (the 32-byte device key)")
    cfg = {"id": device_id, "kind": kind, "key": key, "link": _link(raw.get("link"))}
    if "board" in raw:
        cfg["board"] = _int("board", raw["board"], 16)
    pins = cfg["pins"] = raw.get("pins", {})
    if not isinstance(pins, dict):
        raise ConfigError("'pins' must be an object of GPIO numbers")
    for name in pins:
        if name not in ("skip", "power", "trig", "echo", "jsn_tx", "jsn_rx", "temp", "batt", "tilt", "lid", "scl",
                        "sda", "ldr", "relay", "pwm", "volt", "curr"):
            raise ConfigError("unknown pin '%s'" % name)
        _int("pins." + name, pins[name], 0, 48)
    sim = cfg["sim"] = raw.get("sim", {})
    if not isinstance(sim, dict):
        raise ConfigError("'sim' must be an object {host, port}")
    # (ADC mV, lux) of a GL5528 LDR from 3V3 over a 10 kOhm resistor to ground, rising mV
    table = cfg["ldr_table"] = raw.get("ldr_table") or [[150, 0], [600, 5], [1300, 20], [2000, 80], [2600, 300],
                                                         [3000, 1500], [3200, 10000]]
    ok = isinstance(table, list) and 2 <= len(table) <= 12
    last = -1
    for point in table if ok else ():
        ok = ok and isinstance(point, list) and len(point) == 2
        ok = ok and isinstance(point[0], int) and isinstance(point[1], int) and point[0] > last
        last = point[0] if ok else last
    if not ok:
        raise ConfigError("'ldr_table' must be 2 to 12 [mV, lux] pairs with rising mV")
    at = 1
    while at < len(_TABLE):  # each table line's first word, without splitting the table (RAM)
        name = _TABLE[at:_TABLE.find(" ", at)]
        at = _TABLE.find("\n", at) + 1
        limits = spec(name, kind)
        if name in raw:
            if limits is None:
                raise ConfigError("'%s' is not a %s setting" % (name, kind))
            cfg[name] = _int(name, raw[name], limits[0], limits[1])
        elif limits is not None:
            cfg[name] = limits[2]
    _cross_check(cfg)
    return cfg


def _link(link):
    serial = ("type", "uart", "baud", "tx", "rx", "pty")
    mqtt = ("type", "host", "port", "tls", "password", "ssid", "wifi_password", "keepalive")
    if not isinstance(link, dict) or link.get("type") not in ("serial", "mqtt"):
        raise ConfigError("'link' must be an object with type 'serial' or 'mqtt'")
    for name in link:
        if name not in (serial if link["type"] == "serial" else mqtt):
            raise ConfigError("unknown link setting '%s'" % name)
    out = {"type": link["type"]}
    if link["type"] == "serial":
        for name, default, high in (("uart", 1, 2), ("baud", 115200, 1000000), ("tx", 17, 48), ("rx", 16, 48)):
            out[name] = _int("link." + name, link.get(name, default), 0, high)
        if "pty" in link:
            out["pty"] = _int("link.pty", link["pty"], 64)
    else:
        out["host"] = _int("link.host", link.get("host"), 64)
        out["tls"] = bool(link.get("tls", False))
        out["port"] = _int("link.port", link.get("port", 8883 if out["tls"] else 1883), 1, 65535)
        out["keepalive"] = _int("link.keepalive", link.get("keepalive", 60), 10, 3600)
        for name in ("password", "ssid", "wifi_password"):
            if name in link:
                out[name] = _int("link." + name, link[name], 64)
    return out


def _cross_check(cfg):
    if cfg["kind"] == "bin":
        if cfg["min_mm"] >= cfg["max_mm"]:
            raise ConfigError("'min_mm' must be below 'max_mm'")
        pins = cfg["pins"]
        if not ("trig" in pins and "echo" in pins) and "jsn_rx" not in pins:
            raise ConfigError("a bin needs pins 'trig' and 'echo', or 'jsn_tx' and 'jsn_rx'")
    elif cfg["lux_on"] >= cfg["lux_off"]:
        raise ConfigError("'lux_on' must be below 'lux_off' (the lamp would flicker)")


def take_key(cfg):
    """Remove the device key from `cfg` and return it as bytes (for the COSE Sealer only)."""
    return unhexlify(cfg.pop("key"))


def apply(cfg, changes, path="config.json"):
    """The `config` command: check every change, then update `cfg` and rewrite the file atomically.

    Returns None on success or a message saying what was refused (nothing is changed then).
    """
    import os

    try:
        for name in changes:
            limits = spec(name, cfg["kind"])
            if limits is None:
                raise ConfigError("'%s' cannot be set on a %s" % (name, cfg["kind"]))
            _int(name, changes[name], limits[0], limits[1])
        trial = dict(cfg)
        trial.update(changes)
        _cross_check(trial)
        raw = read(path)
        raw.update(changes)
        with open(path + ".tmp", "w") as f:  # temp file + rename: the old file or the new one, never half
            json.dump(raw, f)
        os.rename(path + ".tmp", path)
    except ConfigError as e:
        return str(e)
    cfg.update(changes)
    return None
