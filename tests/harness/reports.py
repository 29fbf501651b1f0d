"""Decoded reports for tests and bench scripts that start after the wire stage (spool, upstream)."""
from __future__ import annotations

from gateway.wire.model import Reading, Report
from gateway.wire.units import MEASUREMENTS

BASE_TIME = 1764345600  # 2025-11-28 16:00 UTC, the protocol doc's example


def report(device: str, boot: int, seq: int, *values: tuple[str, float | int | bool | str],
           time: int | None = BASE_TIME, uptime: int | None = None) -> Report:
    """A report as the wire stage hands it on: `report("bin-0042", 3, 17, ("fill", 42), ("temp", 21.5))`.
    Units are the names' defaults, as the decoder fills them in."""
    if time is None and uptime is None:
        uptime = 1000 * seq
    readings = tuple(Reading(name, value, MEASUREMENTS[name].unit if name in MEASUREMENTS else None)
                     for name, value in values)
    return Report(device, boot, seq, time, uptime, readings)


def bin_report(device: str, boot: int, seq: int, fill: int = 42, *alarms: str) -> Report:
    """A bin report (fill, dist, temp, batt), with `alarm` records appended."""
    values: list[tuple[str, float | int | bool | str]] = [("fill", fill), ("dist", 1234), ("temp", 21.5),
                                                          ("batt", 3712)]
    values += [("alarm", alarm) for alarm in alarms]
    return report(device, boot, seq, *values, time=BASE_TIME + seq)
