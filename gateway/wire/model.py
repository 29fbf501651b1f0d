"""Typed reports and commands: the payload inside the COSE envelope, checked and given meaning.

`parse_report` / `parse_command` run stages 8 and 9 of the documented order on a payload whose MAC
is already good: payload CBOR and limits (`bad_cbor`, `too_deep`, `too_large`), then version
(`bad_version`), then shape and types (`bad_report` / `bad_command`). Records use the SenML CBOR
labels (RFC 8428); base name/time/unit are resolved, and a missing unit is filled with the
measurement's default so that nothing downstream needs the table.

Integers that the spool stores as SQLite INTEGER (boot, seq, time, uptime, cid) are held to 2**63 - 1.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import cbor2

from gateway.wire.cbor_limits import MAX_TEXT, check_profile, decode
from gateway.wire.cose import MAX_MESSAGE
from gateway.wire.reasons import Reason, Rejected
from gateway.wire.units import ALARM, DEVICE_ALARMS, MEASUREMENTS

VERSION = 1
MAX_RECORDS = 32
MAX_UINT = 2**63 - 1
# A text of at most this many characters is within MAX_TEXT bytes whatever it holds (UTF-8: <= 4 each).
_SHORT_TEXT = MAX_TEXT // 4

# report keys
_K_VERSION, _K_BOOT, _K_SEQ, _K_TIME, _K_UPTIME, _K_RECORDS = 1, 2, 3, 4, 5, 6
_REPORT_KEYS = frozenset({1, 2, 3, 4, 5, 6})
# SenML CBOR labels (RFC 8428 section 6)
_L_BN, _L_BT, _L_BU, _L_N, _L_U, _L_V, _L_VS, _L_VB, _L_S, _L_T = -2, -3, -4, 0, 1, 2, 3, 4, 5, 6
_RECORD_LABELS = frozenset({-4, -3, -2, 0, 1, 2, 3, 4, 5, 6})
# value label -> value kind, as in units.MEASUREMENTS (a sum is numeric)
_VALUE_LABELS = {_L_V: "v", _L_VS: "vs", _L_VB: "vb", _L_S: "v"}
_TEXT_OR_BOOL = {"vs": str, "vb": bool}
# name -> default unit of the numeric measurements that have one (the usual record's fast path)
_NUMERIC_UNITS = {name: m.unit for name, m in MEASUREMENTS.items() if m.kind == "v" and m.unit is not None}
# SenML name rule (RFC 8428 section 4.5.1); names in the table skip it.
_SENML_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*")

# command keys and ops
_C_VERSION, _C_CID, _C_OP, _C_ARGS = 1, 10, 11, 12
_COMMAND_KEYS = frozenset({1, 10, 11, 12})
OPS = ("ack", "time", "config", "reboot", "ping")
# ack and time arguments reuse the report keys they refer to; config keeps its text keys.
_NAMED_ARGS: dict[str, dict[str, int]] = {"ack": {"boot": 2, "seq": 3}, "time": {"time": 4}}


# Reading and Report are named tuples rather than frozen dataclasses: just as immutable, and made about
# three times faster (a frozen dataclass sets each field through object.__setattr__), which counts at
# five per report on the gateway's hot path. The hot path makes them with `_new_tuple(Reading, fields)`,
# which skips the Python-level __new__ a named tuple's constructor goes through (half its cost).
class Reading(NamedTuple):
    """One SenML record, resolved: `time_offset` is seconds from the report time (0 when absent)."""

    name: str
    value: float | int | bool | str
    unit: str | None
    time_offset: float | int = 0
    is_sum: bool = False


class Report(NamedTuple):
    """A report as accepted: `time` (unix s) when the device clock was set, else `uptime` (ms)."""

    device: str
    boot: int
    seq: int
    time: int | None
    uptime: int | None
    readings: tuple[Reading, ...]


_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class Command:
    """A command; `args` by name: ack {boot, seq}, time {time}, config {setting: value}, else {}."""

    cid: int
    op: str
    args: Mapping[str, Any]


# ------------------------------------------------------------------------------------------ checks


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT  # type(True) is bool, so bools are out


def _is_number(value: object) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _decode_payload(payload: bytes, check: bool = True) -> Any:
    if len(payload) > MAX_MESSAGE:
        raise Rejected(Reason.TOO_LARGE, f"payload of {len(payload)} bytes")
    return decode(payload, check=check)


def _version(data: Any, shape_error: Reason) -> None:
    version = data.get(1) if type(data) is dict else None
    if type(version) is not int:
        raise Rejected(shape_error, "not a map with an integer version")
    if version != VERSION:
        raise Rejected(Reason.BAD_VERSION, f"version {version}")


# ----------------------------------------------------------------------------------------- reports


def _bad(detail: str) -> Rejected:
    return Rejected(Reason.BAD_REPORT, detail)


def parse_report(payload: bytes, device: str) -> Report:
    """The report in `payload` (MAC already checked) from `device`, or Rejected.

    The CBOR profile check (stage 8) comes before the shape checks (stage 9), so its reason wins. Its
    separate walk is skipped when the shape checks pass and have seen every value it could refuse (the
    usual report, all of whose records take the fast path, or one whose keys are all integers and whose
    records hold only plain values); otherwise it runs before any shape refusal is raised.
    """
    data = _decode_payload(payload, check=False)
    try:
        report, usual = _report(data, device)
    except Rejected:
        check_profile(data)
        raise
    if not usual and not _profile_seen(data):
        check_profile(data)
    return report


def _profile_seen(data: dict[Any, Any]) -> bool:
    """True when the report map (which passed the shape checks: values checked as integers or the
    records list) and its record maps have integer keys only, and the records hold only numbers,
    booleans and texts within the length limit. The shape checks compare keys by equality, which a
    bool or float key passes (true == 1, 2.0 == 2): hence the key types here."""
    for key in data:
        if type(key) is not int:
            return False
    for record in data[_K_RECORDS]:
        for key, value in record.items():
            kind = type(value)
            if type(key) is not int:
                return False
            if kind is str:
                if len(value) > _SHORT_TEXT:
                    return False
            elif kind is not int and kind is not float and kind is not bool:
                return False
    return True


def _report(data: Any, device: str) -> tuple[Report, bool]:
    """The report, and whether the shape checks saw every key and value the profile walk would check:
    integer keys in the report map and only usual records (see `_readings`)."""
    records = data.get(_K_RECORDS) if type(data) is dict else None
    if type(records) is list and len(records) > MAX_RECORDS:
        raise Rejected(Reason.TOO_LARGE, f"{len(records)} records")
    _version(data, Reason.BAD_REPORT)
    if not data.keys() <= _REPORT_KEYS:
        raise _bad("unknown report key")
    boot, seq = data.get(_K_BOOT), data.get(_K_SEQ)
    # _is_uint written out: this runs for every report
    if not (type(boot) is int and 1 <= boot <= MAX_UINT and type(seq) is int and 1 <= seq <= MAX_UINT):
        raise _bad("boot and seq must be integers >= 1")
    time, uptime = data.get(_K_TIME), data.get(_K_UPTIME)
    if time is None and uptime is None:
        raise _bad("neither time nor uptime")
    if (time is not None and not _is_uint(time)) or (uptime is not None and not _is_uint(uptime)):
        raise _bad("time and uptime must be unsigned integers")
    if type(records) is not list or not records:
        raise _bad("records must be a non-empty array")
    readings, usual = _readings(records)
    for key in data:
        if type(key) is not int:  # equal to a report key (true == 1), yet outside the profile
            usual = False
    return _new_tuple(Report, (device, boot, seq, time, uptime, readings)), usual


def _readings(records: list[Any]) -> tuple[tuple[Reading, ...], bool]:
    """The readings, and True when every record was the usual one: then the shape checks have seen every
    key and value of the records (two integer keys, a table name, a number): nothing left to profile."""
    base_name, base_time, base_unit = "", 0, None
    readings: list[Reading] = []
    append = readings.append
    numeric_units = _NUMERIC_UNITS
    isfinite = math.isfinite
    usual_only = True
    for record in records:
        # The usual record, {n: a numeric measurement of the table, v: a number}, before any base field:
        # every check below would pass and give this Reading.
        if type(record) is dict and len(record) == 2 and not base_name and base_unit is None:
            usual: Any = record.get(_L_N)
            value = record.get(_L_V)
            unit = numeric_units.get(usual) if type(usual) is str else None
            if unit is not None and (type(value) is int or (type(value) is float and isfinite(value))):
                first, second = record  # n and v by equality; a bool or float key (0.0, false) is not usual
                if type(first) is int and type(second) is int:
                    append(_new_tuple(Reading, (usual, value, unit, base_time + 0, False)))
                    continue
        usual_only = False
        if type(record) is not dict or not record.keys() <= _RECORD_LABELS:
            raise _bad("record is not a map of SenML labels")
        if _L_BN in record or _L_BT in record or _L_BU in record:
            base_name, base_time, base_unit = _bases(record, base_name, base_time, base_unit)
        name = record.get(_L_N, "")
        if type(name) is not str:
            raise _bad("record name is not text")
        if base_name:
            name = base_name + name
        measurement = MEASUREMENTS.get(name)
        if measurement is None and _SENML_NAME.fullmatch(name) is None:
            raise _bad("record without a valid name")
        label = _L_V if _L_V in record else _L_VB if _L_VB in record else _L_VS if _L_VS in record else _L_S
        # {n, value} is the usual record; anything longer may carry a second value label.
        if label not in record or (len(record) > 2 and len(record.keys() & _VALUE_LABELS.keys()) != 1):
            raise _bad(f"{name}: needs exactly one of v, vs, vb, s")
        value = record[label]
        kind = _VALUE_LABELS[label]
        if not (_is_number(value) if kind == "v" else type(value) is _TEXT_OR_BOOL[kind]):
            raise _bad(f"{name}: value of the wrong type")
        if measurement is not None and measurement.kind != kind:
            raise _bad(f"{name}: must be sent as {measurement.kind}")
        if name == ALARM and value not in DEVICE_ALARMS:
            raise _bad("unknown alarm")
        unit = record.get(_L_U, base_unit)
        if unit is None:
            unit = measurement.unit if measurement is not None else None
        elif type(unit) is not str:
            raise _bad(f"{name}: unit is not text")
        offset = record.get(_L_T, 0)
        if not _is_number(offset):
            raise _bad(f"{name}: time offset is not a number")
        append(Reading(name, value, unit, base_time + offset, label == _L_S))
    return tuple(readings), usual_only


def _bases(record: dict[int, Any], name: str, time: float | int, unit: str | None) -> tuple[str, Any, Any]:
    """SenML base fields: they apply to this record and every later one."""
    if _L_BN in record:
        name = record[_L_BN]
        if type(name) is not str:
            raise _bad("base name is not text")
    if _L_BT in record:
        time = record[_L_BT]
        if not _is_number(time):
            raise _bad("base time is not a number")
    if _L_BU in record:
        unit = record[_L_BU]
        if type(unit) is not str:
            raise _bad("base unit is not text")
    return name, time, unit


# ---------------------------------------------------------------------------------------- commands


def parse_command(payload: bytes) -> Command:
    """The command in `payload` (MAC already checked), or Rejected."""
    data = _decode_payload(payload)
    _version(data, Reason.BAD_COMMAND)
    if data.keys() != _COMMAND_KEYS:
        raise Rejected(Reason.BAD_COMMAND, "keys must be version, cid, op, args")
    cid, op, args = data[_C_CID], data[_C_OP], data[_C_ARGS]
    if not _is_uint(cid) or op not in OPS or type(args) is not dict:
        raise Rejected(Reason.BAD_COMMAND, "bad cid, unknown op or args not a map")
    return Command(cid, op, _named_args(op, args))


def _named_args(op: str, args: dict[Any, Any]) -> dict[str, Any]:
    names = _NAMED_ARGS.get(op)
    if names is not None:
        named = {name: args.get(key) for name, key in names.items()}
        if len(args) != len(names) or not all(_is_uint(value) for value in named.values()):
            raise Rejected(Reason.BAD_COMMAND, f"{op} takes {', '.join(names)} as unsigned integers")
        return named
    if op == "config":
        if not all(type(key) is str and key and _is_setting(value) for key, value in args.items()):
            raise Rejected(Reason.BAD_COMMAND, "config takes text keys and plain values")
        return dict(args)
    if args:
        raise Rejected(Reason.BAD_COMMAND, f"{op} takes no arguments")
    return {}


def _is_setting(value: Any) -> bool:
    """A config value: a number, bool or text, or an array of those (e.g. a dimming schedule)."""
    if type(value) is list:
        return all(_is_setting(element) for element in value)
    return _is_number(value) or type(value) in (bool, str)


def _wire(value: Any) -> Any:
    """Integral floats travel as integers, their shortest exact CBOR form, where a CBOR integer
    (-2**64 .. 2**64-1) holds them."""
    if type(value) is float and value.is_integer() and -(2**64) <= value < 2**64:
        return int(value)
    if type(value) in (list, tuple):
        return [_wire(element) for element in value]
    return value


def encode_command(command: Command) -> bytes:
    """Deterministic CBOR of `command`; ValueError if a device would refuse it."""
    names = _NAMED_ARGS.get(command.op)
    if names is not None:
        return _encode_named(command, names)
    args = {key: _wire(value) for key, value in command.args.items()}
    payload = cbor2.dumps(
        {_C_VERSION: VERSION, _C_CID: command.cid, _C_OP: command.op, _C_ARGS: args}, canonical=True
    )
    try:
        parse_command(payload)
    except Rejected as exc:
        raise ValueError(f"a device would refuse this command ({exc})") from None
    return payload


def _encode_named(command: Command, names: dict[str, int]) -> bytes:
    """`ack` and `time`, whose arguments are unsigned integers under integer keys.

    The serial link seals an `ack` per port read, so this skips what `encode_command` does for the other
    ops: keys written in ascending order with integer values and a text op are already deterministic
    CBOR (RFC 8949 section 4.2.1) without cbor2's sorting pass, and decoding the result again to check it
    would find nothing that the checks here have not refused already."""
    args = command.args
    if args.keys() != names.keys():
        raise ValueError(f"{command.op} takes {', '.join(names)}")
    values = [args[name] for name in names]
    if not (_is_uint(command.cid) and all(map(_is_uint, values))):
        raise ValueError(f"a device would refuse this command ({command.op} takes unsigned integers "
                         f"{', '.join(names)}, and a cid)")
    return cbor2.dumps({_C_VERSION: VERSION, _C_CID: command.cid, _C_OP: command.op,
                        _C_ARGS: dict(zip(names.values(), values))})
