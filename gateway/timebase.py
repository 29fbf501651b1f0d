"""A reading's time: the device's clock when it is sane, else estimated from the report's uptime.

A device without a set clock sends `uptime` (ms since its boot) instead of `time`. Per (device, boot)
the gateway keeps an estimate of the boot's start on the unix clock: a report cannot arrive before it
was made, so `arrival - uptime` is never earlier than the true boot time (up to the gateway clock's
error), and the smallest such value over the boot's reports is the estimate, set by the freshest
report (one that came straight over a live link rather than out of a backlog). A report that carries
both a sane `time` and `uptime` pins the boot's start exactly. Estimated times are marked as such all
the way upstream.

A device time is sane when it is after `min_valid` and not more than `max_future_s` ahead of the
gateway's clock; an insane time (a clock never set, or set wrong) is treated as absent.

Bound: the last `MAX_BOOTS` boots per device (a backlog from an older boot still finds its boot start);
memory is at most registered devices x MAX_BOOTS small entries. The estimates live in memory only: after
a gateway restart they are learned again from the next reports.
"""
from __future__ import annotations

from gateway.wire import Report

MAX_BOOTS = 4


class Timebase:
    def __init__(self, min_valid: int, max_future_s: float) -> None:
        self.min_valid = min_valid
        self.max_future_s = max_future_s
        # device -> {boot: (boot start estimate in unix s, pinned by a device clock)}
        self._boots: dict[str, dict[int, tuple[float, bool]]] = {}
        self.estimated = 0  # reports whose time was estimated

    def is_sane(self, device_time: int | None, arrival_s: float) -> bool:
        return device_time is not None and self.min_valid <= device_time <= arrival_s + self.max_future_s

    def settle(self, report: Report, arrival_ns: int) -> tuple[float, bool]:
        """(unix time of the report, estimated?) for a report that arrived at `arrival_ns`."""
        arrival = arrival_ns / 1e9
        uptime = report.uptime
        if self.is_sane(report.time, arrival):
            assert report.time is not None
            if uptime is not None:
                self._learn(report.device, report.boot, report.time - uptime / 1000, True)
            return float(report.time), False
        self.estimated += 1
        if uptime is None:
            return arrival, True
        start = self._learn(report.device, report.boot, arrival - uptime / 1000, False)
        return start + uptime / 1000, True

    def boot_start(self, device: str, boot: int) -> float | None:
        entry = self._boots.get(device, {}).get(boot)
        return None if entry is None else entry[0]

    def _learn(self, device: str, boot: int, candidate: float, pinned: bool) -> float:
        boots = self._boots.get(device)
        if boots is None:
            boots = self._boots[device] = {}
        entry = boots.get(boot)
        if entry is None:
            if len(boots) >= MAX_BOOTS:
                oldest = min(boots)
                if boot < oldest:
                    return candidate  # older than every boot kept: this report's own bound
                del boots[oldest]
            boots[boot] = (candidate, pinned)
            return candidate
        start, was_pinned = entry
        if was_pinned and not pinned:
            return start
        if pinned and not was_pinned:
            boots[boot] = (candidate, True)
            return candidate
        if candidate < start:
            boots[boot] = (candidate, pinned)
            return candidate
        return start
