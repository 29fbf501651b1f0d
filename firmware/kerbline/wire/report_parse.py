"""Checking a received report: the same rules as the gateway's, for the simulator and the tests.

A device only builds reports (`kerbline.wire.report`) and never loads this module, which keeps about
4 KB of bytecode out of its heap.
"""
from kerbline.wire import cbor
from kerbline.wire.reject import BAD_REPORT, BAD_VERSION, TOO_LARGE, Reject

# docs/protocol.md: the report's keys and the SenML CBOR labels (RFC 8428) of its records. The encoder
# (kerbline.wire.report) keeps its own copies as private consts, which leave no names on a board.
VERSION = 1
MAX_RECORDS = 32
K_VERSION, K_BOOT, K_SEQ, K_TIME, K_UPTIME, K_RECORDS = 1, 2, 3, 4, 5, 6
L_BASE_NAME, L_BASE_TIME, L_BASE_UNIT = -2, -3, -4
L_NAME, L_UNIT, L_VALUE, L_STRING, L_BOOL, L_SUM, L_TIME = 0, 1, 2, 3, 4, 5, 6

ALARMS = ("full", "fire", "tilt", "lowbatt", "lamp_fail", "sensor_fault")
# The value label each registered name must use (docs/protocol.md); other names may use any.
_NUMBER_NAMES = ("fill", "dist", "temp", "batt", "lux", "dim", "power", "volt", "curr", "energy", "rssi", "heap",
                 "queue", "uptime")
_BOOL_NAMES = ("tilt", "lid", "lamp")
_REPORT_KEYS = (K_VERSION, K_BOOT, K_SEQ, K_TIME, K_UPTIME, K_RECORDS)
_RECORD_KEYS = (L_BASE_NAME, L_BASE_TIME, L_BASE_UNIT, L_NAME, L_UNIT, L_VALUE, L_STRING, L_BOOL, L_SUM, L_TIME)


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
        elif name == "fault":
            _check("vs" in parsed)
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
