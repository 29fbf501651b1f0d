"""Readings as the platform sees them: flat JSON objects, or SenML-JSON (RFC 8428).

Every reading carries (device, boot, seq), so a platform can drop a reading it already has no matter
how batches were cut, and its unit is written out even when the device left the default off the wire
(the spool stores the resolved unit). The flat objects are rendered by the spool itself
(gateway.spool.reads, ReadMode.JSON): `{"device", "boot", "seq", "name", "value", "unit", "time",
"time_estimated"}`; this module wraps them into a body, and renders SenML from Python reports.
"""
from __future__ import annotations

import json
from typing import Any, Callable, NamedTuple

from gateway.spool import ReadMode, StoredReport
from gateway.upstream.batch import Batch
from gateway.wire.model import Reading

compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def reading_time(report: StoredReport, reading: Reading) -> float:
    return report.time + reading.time_offset if reading.time_offset else report.time


def json_body(batch: Batch) -> bytes:
    """`{"batch": key, "readings": [...]}`: the key rides in the body too, for links without headers."""
    return f'{{"batch":"{batch.key}","readings":[{batch.objects_text()}]}}'.encode()


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
            if r.unit is not None:
                record["u"] = r.unit
            if r.time_offset:
                record["t"] = r.time_offset
            record["boot"] = report.boot
            record["seq"] = report.seq
            if report.time_estimated:
                record["time_estimated"] = True
            pack.append(record)
    return pack


def senml_body(batch: Batch) -> bytes:
    return compact_json(senml_records(batch.reports)).encode()


class Format(NamedTuple):
    """A body format: what the sink reads from the spool, how it renders a batch, its content type."""

    reads: ReadMode
    render: Callable[[Batch], bytes]
    content_type: str


FORMATS: dict[str, Format] = {
    "json": Format(ReadMode.JSON, json_body, "application/json"),
    "senml": Format(ReadMode.REPORTS, senml_body, "application/senml+json"),
}
