"""Readings as the platform sees them: flat JSON objects, or SenML-JSON (RFC 8428).

Every reading carries (device, boot, seq), so a platform can drop a reading it already has no matter
how batches were cut, and its unit is written out even when the device left the default off the wire.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from gateway.spool import StoredReport
from gateway.wire.model import Reading
from gateway.upstream.batch import Batch
from gateway.wire.units import MEASUREMENTS

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_DEFAULT_UNITS = {name: m.unit for name, m in MEASUREMENTS.items()}


def unit_of(reading: Reading) -> str | None:
    """The reading's unit. Decoded reports have their defaults filled in already; readings the gateway
    makes itself (gateway.spool.Spool.submit_local) may leave it to the table."""
    return reading.unit if reading.unit is not None else _DEFAULT_UNITS.get(reading.name)


def reading_time(report: StoredReport, reading: Reading) -> float:
    return report.time + reading.time_offset if reading.time_offset else report.time


def reading_objects(reports: tuple[StoredReport, ...]) -> list[dict[str, Any]]:
    """One JSON object per reading: device, boot, seq, name, value, unit, time, time_estimated."""
    units = _DEFAULT_UNITS
    out = []
    append = out.append
    for report in reports:
        device, boot, seq, estimated, base = (report.device, report.boot, report.seq, report.time_estimated,
                                              report.time)
        for r in report.readings:
            append({"device": device, "boot": boot, "seq": seq, "name": r.name, "value": r.value,
                    "unit": r.unit if r.unit is not None else units.get(r.name),
                    "time": base + r.time_offset if r.time_offset else base, "time_estimated": estimated})
    return out


def json_body(batch: Batch) -> bytes:
    """`{"batch": key, "readings": [...]}`: the key rides in the body too, for links without headers."""
    return _dumps({"batch": batch.key, "readings": reading_objects(batch.reports)}).encode()


def _senml_value(reading: Reading) -> tuple[str, float | int | bool | str]:
    value = reading.value
    if isinstance(value, bool):
        return "vb", value
    if isinstance(value, str):
        return "vs", value
    return ("s" if reading.is_sum else "v"), value


def senml_records(reports: tuple[StoredReport, ...]) -> list[dict[str, Any]]:
    """A SenML pack: each report's first record sets the base name `{device}:` and base time.

    SenML has no field for boot, seq or an estimated time; they travel as the extension labels `boot`,
    `seq` and `time_estimated` on every record (labels without a trailing `_` may be ignored by a SenML
    receiver that does not know them, as RFC 8428 section 4.4 allows).
    """
    pack: list[dict[str, Any]] = []
    for report in reports:
        for i, r in enumerate(report.readings):
            label, value = _senml_value(r)
            record: dict[str, Any] = {"n": r.name, label: value}
            if i == 0:
                record["bn"] = f"{report.device}:"
                record["bt"] = report.time
            unit = unit_of(r)
            if unit is not None:
                record["u"] = unit
            if r.time_offset:
                record["t"] = r.time_offset
            record["boot"] = report.boot
            record["seq"] = report.seq
            if report.time_estimated:
                record["time_estimated"] = True
            pack.append(record)
    return pack


def senml_body(batch: Batch) -> bytes:
    return _dumps(senml_records(batch.reports)).encode()


# format name -> (render, content type)
FORMATS: dict[str, tuple[Callable[[Batch], bytes], str]] = {
    "json": (json_body, "application/json"),
    "senml": (senml_body, "application/senml+json"),
}
