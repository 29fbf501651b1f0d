"""What the spool stores per report, and what it hands back to the batcher.

Readings are kept as compact JSON (`[[name, value, unit, offset], ...]`): the batcher needs them as
Python values for every sink, and `json.loads` rebuilds them faster than re-decoding and re-checking the
CBOR payload would. The raw COSE message is kept beside them, untouched, as the evidence a technician
or an auditor can re-verify.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Protocol, Sequence

from gateway.wire.units import ALARM

# Bytes a stored report costs beyond its readings and raw message (row header, integers, index entry):
# an estimate that keeps the byte bound honest for reports with few readings.
ROW_OVERHEAD = 64

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class ReadingLike(Protocol):
    """The fields the spool needs from a decoded reading (gateway.wire.model.Reading)."""

    name: str
    value: float | int | bool | str
    unit: str | None
    time_offset: float | None


class ReportLike(Protocol):
    """The fields the spool needs from a decoded report (gateway.wire.model.Report)."""

    device: str
    boot: int
    seq: int
    time: int | None
    uptime: int | None
    readings: Sequence[ReadingLike]


class SubmitResult(enum.Enum):
    """What became of a submitted report; STORED and DUPLICATE may be acknowledged to the device."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # (device, boot, seq) was accepted before: it is already durable
    FULL = "full"  # refused: the spool is at its bound with alarms only; do not acknowledge


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading as stored: unit None means the name's default unit."""

    name: str
    value: float | int | bool | str
    unit: str | None
    time_offset: float | None


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


def encode_readings(readings: Sequence[ReadingLike]) -> str:
    return _dumps([[r.name, r.value, r.unit, r.time_offset] for r in readings])


def decode_readings(text: str) -> tuple[Reading, ...]:
    return tuple(Reading(n, v, u, t) for n, v, u, t in json.loads(text))


def has_alarm(readings: Sequence[ReadingLike]) -> bool:
    """Alarm reports are never thinned: an `alarm` record in the report makes it one."""
    return any(r.name == ALARM for r in readings)
