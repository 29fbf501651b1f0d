"""Rejection log lines, rate-limited per reason so a flood of bad frames cannot flood the journal.

Per reason, the first `burst` rejections of each `window_s` are logged one line each (device, reason,
link, source, detail); the rest are counted and summed up in one line when the window ends (at the
next rejection of that reason, or at `flush`). The Prometheus counter counts every one regardless.
"""
from __future__ import annotations

import logging
import time

from gateway.logging import fields

log = logging.getLogger("gateway.verify")


class RejectionLog:
    def __init__(self, burst: int, window_s: float) -> None:
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, list[float]] = {}  # reason -> [window start, logged, suppressed]

    def record(self, reason: str, device: str | None, link: str, source: str, detail: str,
               level: int = logging.WARNING) -> None:
        now = time.monotonic()
        window = self._windows.get(reason)
        if window is None or now - window[0] >= self.window_s:
            if window is not None:
                self._summary(reason, window)
            window = self._windows[reason] = [now, 0, 0]
        if window[1] < self.burst:
            window[1] += 1
            log.log(level, "rejected", extra=fields(device=device or "-", reason=reason, link=link, source=source,
                                                    detail=detail))
        else:
            window[2] += 1

    def flush(self) -> None:
        """Write the summary of every window that has ended (called periodically by the service)."""
        now = time.monotonic()
        for reason, window in list(self._windows.items()):
            if now - window[0] >= self.window_s:
                self._summary(reason, window)
                del self._windows[reason]

    def _summary(self, reason: str, window: list[float]) -> None:
        if window[2]:
            log.warning("rejections not logged one by one", extra=fields(
                reason=reason, count=int(window[2]), window_s=self.window_s))
