"""Reports: the CBOR map a device sends, with its readings as SenML records (RFC 8428 CBOR labels).

Building writes the deterministic encoding directly (keys are emitted in sorted order by construction),
so a report costs one bytearray and no intermediate dicts. Values are already quantized by the caller
to an integer or a float exact in float16/float32 (the ESP32 has 32-bit floats); an integral float is
sent as an integer, the shortest exact form.

`parse` is the same check the gateway applies, used by the simulator and the tests.
"""
from kerbline.compat import const
from kerbline.wire import cbor
from kerbline.wire.reject import BAD_REPORT, BAD_VERSION, TOO_LARGE, Reject

VERSION = const(1)
MAX_RECORDS = const(32)

# report keys
K_VERSION = const(1)
K_BOOT = const(2)
K_SEQ = const(3)
K_TIME = const(4)
K_UPTIME = const(5)
K_RECORDS = const(6)
# SenML CBOR labels
L_BASE_NAME = const(-2)
L_BASE_TIME = const(-3)
L_BASE_UNIT = const(-4)
L_NAME = const(0)
L_UNIT = const(1)
L_VALUE = const(2)
L_STRING = const(3)
L_BOOL = const(4)
L_SUM = const(5)
L_TIME = const(6)

_UINT = const(0)
_TEXT = const(3)
_ARRAY = const(4)
_MAP = const(5)

ALARMS = ("full", "fire", "tilt", "lowbatt", "lamp_fail", "sensor_fault")
# The value label each registered name must use (docs/protocol.md); other names may use any.
_NUMBER_NAMES = ("fill", "dist", "temp", "batt", "lux", "dim", "power", "volt", "curr", "energy", "rssi", "heap",
                 "queue", "uptime")
_BOOL_NAMES = ("tilt", "lid", "lamp")
_REPORT_KEYS = (K_VERSION, K_BOOT, K_SEQ, K_TIME, K_UPTIME, K_RECORDS)
_RECORD_KEYS = (L_BASE_NAME, L_BASE_TIME, L_BASE_UNIT, L_NAME, L_UNIT, L_VALUE, L_STRING, L_BOOL, L_SUM, L_TIME)


def _value_label(value):
    if isinstance(value, bool):
        return L_BOOL
    if isinstance(value, str):
        return L_STRING
    return L_VALUE


def _number(value):
    """The shortest exact form of a reading: integral floats become ints; NaN and infinities are refused."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("reading is not a finite number")
        # below 2**53 every integral float is an exact int; beyond, the float is already the shortest form
        if -9.007199254740992e15 <= value <= 9.007199254740992e15 and value == int(value):
            return int(value)
    return value


def encode(boot, seq, records, time=None, uptime=None):
    """The report payload.

    `records`: a list of (name, value) or (name, value, t_offset) tuples; value is a number (v), a str
    (vs) or a bool (vb). `time` is unix seconds when the clock is set, else `uptime` (ms) is given.
    """
    if not 1 <= len(records) <= MAX_RECORDS:
        raise ValueError("1 to 32 records")
    if time is None and uptime is None:
        raise ValueError("time or uptime needed")
    out = bytearray(cbor.head(_MAP, 4 + (time is not None) + (uptime is not None)))
    for key, value in ((K_VERSION, VERSION), (K_BOOT, boot), (K_SEQ, seq), (K_TIME, time), (K_UPTIME, uptime)):
        if value is not None:
            out.append(key)
            out.extend(cbor.head(_UINT, value))
    out.append(K_RECORDS)
    out.extend(cbor.head(_ARRAY, len(records)))
    for record in records:
        offset = record[2] if len(record) > 2 else None
        out.extend(cbor.head(_MAP, 2 if offset is None else 3))
        out.append(L_NAME)
        cbor.encode_into(out, record[0])
        value = record[1]
        out.append(_value_label(value))
        cbor.encode_into(out, _number(value))
        if offset is not None:
            out.append(L_TIME)
            cbor.encode_into(out, _number(offset))
    return bytes(out)


def _is_uint(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value == value and value not in (float("inf"), float("-inf"))


def _valid_name(name):
    """SenML name rule (RFC 8428 4.5.1): starts with a letter or digit, then [A-Za-z0-9-:./_]."""
    if not name:
        return False
    for i in range(len(name)):
        c = name[i]
        if c.isalpha() or c.isdigit():
            continue
        if i == 0 or c not in "-:./_":
            return False
    return True


def _check(ok):
    if not ok:
        raise Reject(BAD_REPORT)


def parse(payload):
    """Check a report payload and return its meaning: {version, boot, seq, time|uptime, records}.

    Records come back resolved (base name/time applied) as dicts with `n`, one of `v`/`vs`/`vb`/`s`,
    and `u`, `t` when present. Raises Reject with the contract's reason.
    """
    report = cbor.loads(payload)
    _check(isinstance(report, dict))
    records = report.get(K_RECORDS)
    if isinstance(records, list) and len(records) > MAX_RECORDS:
        raise Reject(TOO_LARGE)
    version = report.get(K_VERSION)
    _check(_is_uint(version))
    if version != VERSION:
        raise Reject(BAD_VERSION)
    for key in report:
        _check(key in _REPORT_KEYS)
    boot = report.get(K_BOOT)
    seq = report.get(K_SEQ)
    _check(_is_uint(boot) and boot >= 1 and _is_uint(seq) and seq >= 1)
    meaning = {"version": version, "boot": boot, "seq": seq}
    _check(K_TIME in report or K_UPTIME in report)
    for key, name in ((K_TIME, "time"), (K_UPTIME, "uptime")):
        if key in report:
            _check(_is_uint(report[key]))
            meaning[name] = report[key]
    _check(isinstance(records, list) and records)
    meaning["records"] = _parse_records(records)
    return meaning


def _parse_records(records):
    base_name = ""
    base_time = 0
    base_unit = None
    out = []
    for record in records:
        _check(isinstance(record, dict))
        for key in record:
            _check(key in _RECORD_KEYS)
        if L_BASE_NAME in record:
            base_name = record[L_BASE_NAME]
            _check(isinstance(base_name, str))
        if L_BASE_TIME in record:
            base_time = record[L_BASE_TIME]
            _check(_is_number(base_time))
        if L_BASE_UNIT in record:
            base_unit = record[L_BASE_UNIT]
            _check(isinstance(base_unit, str))
        name = record.get(L_NAME, "")
        _check(isinstance(name, str))
        name = base_name + name
        _check(_valid_name(name))
        parsed = {"n": name}
        values = 0
        for label, key, valid in (
            (L_VALUE, "v", _is_number),
            (L_STRING, "vs", _is_text),
            (L_BOOL, "vb", _is_bool),
            (L_SUM, "s", _is_number),
        ):
            if label in record:
                _check(valid(record[label]))
                parsed[key] = record[label]
                values += 1
        _check(values == 1)
        if name in _NUMBER_NAMES:
            _check("v" in parsed)
        elif name in _BOOL_NAMES:
            _check("vb" in parsed)
        elif name == "alarm":
            _check(parsed.get("vs") in ALARMS)
        unit = record.get(L_UNIT, base_unit)
        if unit is not None:
            _check(isinstance(unit, str))
            parsed["u"] = unit
        if L_TIME in record or base_time:
            offset = record.get(L_TIME, 0)
            _check(_is_number(offset))
            parsed["t"] = base_time + offset
        out.append(parsed)
    return out


def _is_text(value):
    return isinstance(value, str)


def _is_bool(value):
    return isinstance(value, bool)
