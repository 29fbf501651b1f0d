"""The quarantine: raw frames the gateway refused, kept for a technician to inspect (HTTP API).

Bounded twice: at most `max_frames` frames and `max_bytes` bytes of raw data; a new frame pushes out
the oldest until both bounds hold, and `evicted` counts what went. Each frame keeps at most
`KEEP_BYTES` of its raw bytes (the largest legal frame is about 1.1 KB, so only a `too_large` message
is ever cut, and its first 2 KB show what it was); `size` is its full length.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

KEEP_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Quarantined:
    at: float  # unix time of arrival
    link: str  # "mqtt" or "serial"
    source: str  # the topic or the serial port
    device: str | None  # the device the message claims to come from, when it names one
    reason: str
    detail: str
    raw: bytes
    size: int

    def public(self) -> dict[str, Any]:
        return {"at": self.at, "link": self.link, "source": self.source, "device": self.device,
                "reason": self.reason, "detail": self.detail, "size": self.size,
                "truncated": self.size > len(self.raw), "raw_hex": self.raw.hex()}


class Quarantine:
    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < KEEP_BYTES:
            raise ValueError(f"quarantine needs max_frames >= 1 and max_bytes >= {KEEP_BYTES}")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: deque[Quarantined] = deque()
        self.bytes = 0
        self.added = 0
        self.evicted = 0

    def add(self, link: str, source: str, device: str | None, reason: str, detail: str, raw: bytes) -> None:
        kept = bytes(raw[:KEEP_BYTES])
        self._frames.append(Quarantined(time.time(), link, source, device, reason, detail, kept, len(raw)))
        self.bytes += len(kept)
        self.added += 1
        while len(self._frames) > self.max_frames or self.bytes > self.max_bytes:
            self.bytes -= len(self._frames.popleft().raw)
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._frames)

    def list(self, limit: int = 100, device: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` frames first, optionally only one device's or one reason's."""
        out = []
        for item in reversed(self._frames):
            if (device is None or item.device == device) and (reason is None or item.reason == reason):
                out.append(item.public())
                if len(out) >= limit:
                    break
        return out

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("kerbline_quarantine_frames", "Refused frames held for inspection", len(self))
        yield GaugeMetricFamily("kerbline_quarantine_bytes", "Bytes of refused frames held", self.bytes)
        yield CounterMetricFamily("kerbline_quarantine_evicted", "Frames pushed out of the quarantine by its bounds",
                                  self.evicted)
