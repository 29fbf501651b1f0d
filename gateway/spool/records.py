"""What the spool stores per report, and what it hands back to the batcher.

Readings (gateway.wire.model.Reading) are kept as compact JSON: the batcher needs them as
Python values for every sink, and `json.loads` rebuilds them faster than re-decoding and re-checking the
CBOR payload would. The raw COSE message is kept beside them, untouched, as the evidence a technician
or an auditor can re-verify.
"""
from __future__ import annotations

import enum
import json
from math import isfinite
from dataclasses import dataclass
from typing import Any, Sequence

from gateway.wire.model import Reading
from gateway.wire.units import ALARM, MEASUREMENTS

# Bytes a stored report costs beyond its readings and raw message (row header, integers, index entry):
# an estimate that keeps the byte bound honest for reports with few readings.
ROW_OVERHEAD = 64

_DEFAULT_UNITS = {name: m.unit for name, m in MEASUREMENTS.items()}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# The same encoding without the per-call setup JSONEncoder.encode repeats (it builds its C encoder on
# every call, which costs more than encoding four readings): the C encoder is built once, when there.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # None without the _json accelerator
_c_rows = (_c_make_encoder(None, None, json.encoder.encode_basestring, None, ":", ",", False, False, False)
           if _c_make_encoder is not None else None)


def _encode_rows(rows: list[Any]) -> str:
    return "".join(_c_rows(rows, 0)) if _c_rows is not None else _dumps(rows)


class SubmitResult(enum.Enum):
    """What became of a submitted report; STORED and DUPLICATE may be acknowledged to the device."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # (device, boot, seq) was accepted before: it is already durable
    FULL = "full"  # refused: the spool is at its bound with alarms only; do not acknowledge


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A committed report as the batcher reads it back.

    `id` orders the spool (arrival order) and is what sink cursors point at. `time` is unix seconds:
    the device's clock when `time_estimated` is False, else the gateway's estimate.
    """

    id: int
    device: str
    boot: int
    seq: int
    arrival_ns: int
    time: float
    time_estimated: bool
    uptime: int | None
    is_alarm: bool
    readings: tuple[Reading, ...]


def encode_readings(readings: Sequence[Reading]) -> str:
    """`[[name, value, unit, offset], ...]`, with a fifth element 1 on a SenML sum. A unit left None
    (readings the gateway makes itself) is stored as the name's default, so every reader has it.

    The usual reading (a numeric measurement of the table in its default unit, a finite number, no time
    offset, not a sum) is written from a prepared prefix and suffix around the value's repr, which is
    what the JSON encoder writes for an int or a finite float: a third faster for a bin report."""
    pieces = []
    for reading in readings:
        name, value, unit, offset, is_sum = reading
        affix = _USUAL.get(name)
        if (affix is None or unit != affix[2] or is_sum or type(offset) is not int or offset
                or not (type(value) is int or (type(value) is float and isfinite(value)))):
            return _encode_rows([r[:4] if r.unit is not None and not r.is_sum else
                                 [r.name, r.value, r.unit if r.unit is not None else _DEFAULT_UNITS.get(r.name),
                                  r.time_offset, *((1,) if r.is_sum else ())] for r in readings])
        pieces.append(f"{affix[0]}{value!r}{affix[1]}")
    return "[" + ",".join(pieces) + "]"


# name -> (prefix, suffix for offset 0, unit) of the numeric measurements of the table with a unit; the
# names and units are plain ASCII without quotes or backslashes, so they need no escaping (held by tests)
_USUAL = {name: (f'["{name}",', f',"{m.unit}",0]', m.unit) for name, m in MEASUREMENTS.items()
          if m.kind == "v" and m.unit is not None}


def has_alarm(readings: Sequence[Reading]) -> bool:
    """Alarm reports are never thinned: an `alarm` record in the report makes it one."""
    for r in readings:  # a loop, not any(generator): this runs for every report
        if r.name == ALARM:
            return True
    return False
