"""The device config: one JSON file on flash, written at provisioning, checked at every boot.

    {"id": "bin-0042", "kind": "bin", "key": "<64 hex digits>",
     "link": {"type": "serial", "uart": 1, "baud": 115200, "tx": 17, "rx": 16},
     "pins": {"trig": 5, "echo": 18, ...}, "interval": 900, "full_at": 80, ...}

`load()` returns the config as a dict with every setting filled in from the defaults, or raises
ConfigError with a message a technician can act on (main.py then boots into safe mode; it never
crash-loops on a bad config). Unknown keys are errors: a misspelt setting must not silently keep its
default. The key is taken out of the dict (`take_key`) before anything else sees it, so a printed config
never shows it.

Settings are integers with a range (SETTINGS); the `config` command changes them with `apply()`, which
checks every value first and then rewrites the file atomically (temp file + rename: a power cut leaves
the old file or the new one, never half of one).
"""
import json
import os

from binascii import unhexlify

PATH = "/config.json"
KINDS = ("bin", "light")

# name: (min, max, bin default, light default); None = not used by that kind
SETTINGS = {
    "interval": (60, 86400, 900, None),  # s between bin reports (deep sleep in between)
    "wake_s": (2, 120, 20, None),  # s a bin stays awake at most to deliver its reports
    "full_at": (10, 100, 80, None),  # fill % raising `full`
    "depth_mm": (100, 5000, 1000, None),  # bin depth from the full level to the bottom
    "offset_mm": (0, 2000, 100, None),  # sensor to the full level
    "min_mm": (20, 1000, 20, None),  # closest echo the sensor can measure (JSN-SR04T: 250)
    "max_mm": (200, 8000, 4000, None),  # farthest
    "pings": (1, 15, 5, None),  # pings per sample
    "tol_mm": (2, 500, 30, None),  # a ping further than this from the median is an outlier
    "stuck_n": (2, 100, 8, None),  # identical samples in a row that mean a stuck (wet) sensor
    "batt_gain": (1, 100000, 2000, None),  # battery mV = ADC mV * batt_gain / 1000
    "lowbatt_mv": (2000, 15000, 3400, None),
    "fire_at": (30, 125, 70, 70),  # enclosure degC raising `fire`
    "sample_s": (1, 600, None, 5),  # s between light samples
    "report_s": (10, 86400, None, 900),  # s between periodic light reports
    "lux_on": (0, 100000, None, 20),  # lamp on below this lux ...
    "lux_off": (0, 100000, None, 50),  # ... and off above this one (hysteresis)
    "switch_n": (1, 20, None, 2),  # samples in a row past a threshold before the lamp switches
    "dim": (0, 100, None, 100),  # lamp level when on
    "night_start": (0, 1439, None, 0),  # local minute of day the night dimming starts
    "night_end": (0, 1439, None, 300),  # ... and ends
    "night_dim": (0, 100, None, 50),  # lamp level during the night window
    "dark_start": (0, 1439, None, 1080),  # with no light reading: lamp on from (local minute) ...
    "dark_end": (0, 1439, None, 420),  # ... until
    "tz_min": (-720, 840, None, 0),  # local time = UTC + tz_min
    "lamp_min_ma": (0, 100000, None, 50),  # lamp on below this current (or off above it) = lamp_fail
    "volt_gain": (1, 1000000, None, 200),  # lamp V = ADC mV * volt_gain / 1000
    "curr_gain": (1, 1000000, None, 5405),  # lamp mA = (ADC mV - curr_zero_mv) * curr_gain / 1000
    "curr_zero_mv": (0, 3300, None, 0),
    "i2c_tries": (1, 10, None, 3),
    "queue_bytes": (1024, 1048576, 16384, 16384),  # flash queue bound
    "wdt_ms": (5000, 120000, 30000, 30000),
    "crash_n": (2, 20, 3, 3),  # crashes without a healthy run in between that mean safe mode
    "healthy_s": (10, 86400, 300, 300),  # s of running (light) that clear the crash count
}
PINS = ("skip", "trig", "echo", "jsn_tx", "jsn_rx", "temp", "batt", "tilt", "lid", "scl", "sda", "ldr",
        "relay", "pwm", "volt", "curr")
LINK_KEYS = {
    "serial": ("type", "uart", "baud", "tx", "rx", "pty", "tcp"),
    "mqtt": ("type", "host", "port", "tls", "password", "ssid", "wifi_password", "keepalive"),
}
_TOP = ("id", "kind", "key", "board", "link", "pins", "sim", "ldr_table")
# (ADC mV, lux) points of a GL5528 LDR from 3V3 over a 10 kOhm resistor to ground, ascending mV
LDR_TABLE = [[150, 0], [600, 5], [1300, 20], [2000, 80], [2600, 300], [3000, 1500], [3200, 10000]]
TEXT_MAX = 64


class ConfigError(Exception):
    pass


def _int(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError("'%s' must be an integer %d..%d, got %r" % (name, low, high, value))
    return value


def _text(name, value):
    if not isinstance(value, str) or not 0 < len(value) <= TEXT_MAX:
        raise ConfigError("'%s' must be text of 1 to %d characters" % (name, TEXT_MAX))
    return value


def read(path=PATH):
    """The file's JSON object, unchecked; ConfigError when it is missing or not JSON."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("%s is missing: provision the device (see docs/firmware.md)" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    if not isinstance(raw, dict):
        raise ConfigError("%s must hold a JSON object" % path)
    return raw


def load(path=PATH):
    """The checked config with defaults filled in (ConfigError says what is wrong)."""
    return check(read(path))


def check(raw):
    from kerbline.wire.cose import valid_device_id

    cfg = {}
    for name in raw:
        if name not in _TOP and name not in SETTINGS:
            raise ConfigError("unknown setting '%s'" % name)
    device_id = raw.get("id")
    if not isinstance(device_id, str) or not valid_device_id(device_id):
        raise ConfigError("'id' must be 1 to 32 characters of a-z, 0-9 and '-'")
    cfg["id"] = device_id
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError("'kind' must be 'bin' or 'light', got %r" % (kind,))
    cfg["kind"] = kind
    key = raw.get("key")
    try:
        if not isinstance(key, str) or len(key) != 64:
            raise ValueError
        unhexlify(key)
    except ValueError:
        raise ConfigError("'key' must be 64 hex digits (the 32-byte device key)")
    cfg["key"] = key
    board = raw.get("board")
    if board is not None:
        cfg["board"] = _text("board", board)
    cfg["link"] = _link(raw.get("link"))
    cfg["pins"] = _pins(raw.get("pins", {}))
    sim = raw.get("sim", {})
    if not isinstance(sim, dict):
        raise ConfigError("'sim' must be an object {host, port}")
    cfg["sim"] = sim
    cfg["ldr_table"] = _ldr_table(raw.get("ldr_table", LDR_TABLE))
    column = 2 if kind == "bin" else 3
    for name in SETTINGS:
        spec = SETTINGS[name]
        if name in raw:
            if spec[column] is None:
                raise ConfigError("'%s' is not a %s setting" % (name, kind))
            cfg[name] = _int(name, raw[name], spec[0], spec[1])
        elif spec[column] is not None:
            cfg[name] = spec[column]
    _cross_check(cfg)
    return cfg


def _link(link):
    if not isinstance(link, dict) or link.get("type") not in LINK_KEYS:
        raise ConfigError("'link' must be an object with type 'serial' or 'mqtt'")
    allowed = LINK_KEYS[link["type"]]
    for name in link:
        if name not in allowed:
            raise ConfigError("unknown link setting '%s'" % name)
    out = {"type": link["type"]}
    if link["type"] == "serial":
        for name, default, high in (("uart", 1, 2), ("baud", 115200, 1000000), ("tx", 17, 48), ("rx", 16, 48)):
            out[name] = _int("link." + name, link.get(name, default), 0, high)
        for name in ("pty", "tcp"):
            if name in link:
                out[name] = _text("link." + name, link[name])
    else:
        out["host"] = _text("link.host", link.get("host"))
        out["tls"] = bool(link.get("tls", False))
        out["port"] = _int("link.port", link.get("port", 8883 if out["tls"] else 1883), 1, 65535)
        out["keepalive"] = _int("link.keepalive", link.get("keepalive", 60), 10, 3600)
        for name in ("password", "ssid", "wifi_password"):
            if name in link:
                out[name] = _text("link." + name, link[name])
    return out


def _pins(pins):
    if not isinstance(pins, dict):
        raise ConfigError("'pins' must be an object of GPIO numbers")
    for name in pins:
        if name not in PINS:
            raise ConfigError("unknown pin '%s'" % name)
        _int("pins." + name, pins[name], 0, 48)
    return pins


def _ldr_table(table):
    ok = isinstance(table, list) and 2 <= len(table) <= 12
    last = -1
    for point in table if ok else ():
        ok = ok and isinstance(point, list) and len(point) == 2
        ok = ok and isinstance(point[0], int) and isinstance(point[1], int) and point[0] > last
        last = point[0] if ok else last
    if not ok:
        raise ConfigError("'ldr_table' must be 2 to 12 [mV, lux] pairs with rising mV")
    return table


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


def apply(cfg, changes, path=PATH):
    """The `config` command: check every change, then update `cfg` and rewrite the file atomically.

    Returns None on success or a message saying what was refused (nothing is changed then).
    """
    column = 2 if cfg["kind"] == "bin" else 3
    try:
        for name in changes:
            spec = SETTINGS.get(name)
            if spec is None or spec[column] is None:
                raise ConfigError("'%s' cannot be set on a %s" % (name, cfg["kind"]))
            _int(name, changes[name], spec[0], spec[1])
        trial = dict(cfg)
        trial.update(changes)
        _cross_check(trial)
        raw = read(path)
        raw.update(changes)
        write(raw, path)
    except ConfigError as e:
        return str(e)
    cfg.update(changes)
    return None


def write(raw, path=PATH):
    """Write the config object atomically: a temp file, then a rename over the old one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(raw, f)
    os.rename(tmp, path)
