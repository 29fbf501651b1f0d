"""The link and power fault schedule: when links break and devices lose power, as seeded event streams.

The world only decides *when* and *how much*; the device and link layers apply the events (write the
garbage into the pty, close it, stop the broker, cut the device's socket, kill its process). Each
(device, kind) is its own Poisson process with its own random stream, drawn lazily ahead of time, so the
schedule is the same whoever consumes it and however often; adding a kind or a device shifts nothing
else. Windows of one kind never overlap: the next one starts after the previous one ends.

Kinds, by the device's link:
- serial: `garbage` (a burst of random bytes, zeros included, written into the line: `data`),
  `drop_bytes` (the next `count` bytes the device sends are lost), `unplug` (cable out for `duration_s`);
- mqtt: `net_cut` (the device's network is down for `duration_s`);
- every device: `power_cut` (off for `duration_s`, then it boots), `brownout` (an instant reset);
- the broker (`FaultSchedule.broker()`): `broker_restart` (down for `duration_s`, then back).
Scripted `[[event]]`s of these kinds are merged into the same streams.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from simulator.scenario import BROKER_EVENTS, DEVICE_EVENTS, MQTT_EVENTS, SERIAL_EVENTS, FaultRates, Scenario
from simulator.world import rng


@dataclass(frozen=True, slots=True)
class LinkEvent:
    t: float  # simulated unix time at which it starts
    kind: str
    device: str | None  # None for the broker
    duration_s: float = 0.0  # windows: how long the link or power stays down
    data: bytes = b""  # garbage: the bytes to write
    count: int = 0  # drop_bytes: how many bytes to lose


class _Process:
    """One Poisson process of one kind for one device."""

    __slots__ = ("kind", "device", "_r", "_rate", "_mean", "_max_bytes", "next")

    def __init__(self, seed: int, device: str | None, kind: str, per_s: float, mean_s: float,
                 max_bytes: int, start: float) -> None:
        self.kind = kind
        self.device = device
        self._r = rng.stream(seed, device or "broker", "link", kind)
        self._rate = per_s
        self._mean = mean_s
        self._max_bytes = max_bytes
        self.next = self._draw(start)

    def _draw(self, after: float) -> LinkEvent:
        r: random.Random = self._r
        t = after + r.expovariate(self._rate)
        if self.kind == "garbage":
            n = r.randint(1, self._max_bytes)
            return LinkEvent(t, self.kind, self.device, data=r.randbytes(n))
        if self.kind == "drop_bytes":
            return LinkEvent(t, self.kind, self.device, count=r.randint(1, self._max_bytes))
        if self._mean > 0.0:
            return LinkEvent(t, self.kind, self.device, duration_s=r.expovariate(1.0 / self._mean))
        return LinkEvent(t, self.kind, self.device)

    def advance(self) -> LinkEvent:
        """Return the pending event and draw the one after it."""
        e = self.next
        self.next = self._draw(e.t + e.duration_s)
        return e


class EventStream:
    """The time-ordered fault events of one device (or of the broker)."""

    def __init__(self, processes: list[_Process], scripted: list[LinkEvent]) -> None:
        self._procs = processes
        self._heap: list[tuple[float, int]] = [(p.next.t, i) for i, p in enumerate(processes)]
        heapq.heapify(self._heap)
        self._scripted = sorted(scripted, key=lambda e: e.t)

    def peek(self) -> float:
        """The instant of the next event, `inf` if none will ever come."""
        a = self._heap[0][0] if self._heap else math.inf
        b = self._scripted[0].t if self._scripted else math.inf
        return a if a < b else b

    def pop_due(self, t: float) -> list[LinkEvent]:
        """Every event starting at or before t not yet returned, in time order."""
        out: list[LinkEvent] = []
        while True:
            nxt = self.peek()
            if nxt > t:
                return out
            if self._scripted and self._scripted[0].t == nxt:
                out.append(self._scripted.pop(0))
                continue
            _, i = heapq.heappop(self._heap)
            out.append(self._procs[i].advance())
            heapq.heappush(self._heap, (self._procs[i].next.t, i))


_PER_HOUR = 1.0 / 3600.0
_PER_DAY = 1.0 / 86400.0


def _kinds_for(link: str | None, f: FaultRates) -> list[tuple[str, float, float, int]]:
    """(kind, rate per second, mean duration s, max bytes) of the processes for a link ("broker": None)."""
    if link is None:
        return [("broker_restart", f.broker_restart_per_day * _PER_DAY, f.broker_down_mean_s, 0)]
    kinds = [
        ("power_cut", f.power_cut_per_day * _PER_DAY, f.power_cut_mean_s, 0),
        ("brownout", f.brownout_per_day * _PER_DAY, 0.0, 0),
    ]
    if link == "serial":
        kinds += [
            ("garbage", f.garbage_per_hour * _PER_HOUR, 0.0, int(f.garbage_max_bytes)),
            ("drop_bytes", f.drop_per_hour * _PER_HOUR, 0.0, int(f.drop_max_bytes)),
            ("unplug", f.unplug_per_day * _PER_DAY, f.unplug_mean_s, 0),
        ]
    else:
        kinds.append(("net_cut", f.net_cut_per_day * _PER_DAY, f.net_cut_mean_s, 0))
    return kinds


class FaultSchedule:
    """All link and power fault streams of a scenario; one stream object per device, made on first use."""

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario
        self._links = {d.id: d.link for d in scenario.devices}
        self._streams: dict[str | None, EventStream] = {}
        kinds = set(DEVICE_EVENTS + SERIAL_EVENTS + MQTT_EVENTS + BROKER_EVENTS)
        self._scripted: dict[str | None, list[LinkEvent]] = {}
        for e in scenario.events:
            if e.kind in kinds:
                data = rng.stream(scenario.seed, e.device or "broker", "scripted", str(e.at)).randbytes(
                    int(scenario.faults.garbage_max_bytes)) if e.kind == "garbage" else b""
                count = int(scenario.faults.drop_max_bytes) if e.kind == "drop_bytes" else 0
                self._scripted.setdefault(e.device, []).append(
                    LinkEvent(e.at, e.kind, e.device, e.duration_s, data, count))

    def device(self, device_id: str) -> EventStream:
        """The fault stream of one device (the same object on every call: consuming it consumes it)."""
        if device_id not in self._links:
            raise KeyError(f"no device {device_id!r} in scenario {self._scenario.name!r}")
        return self._stream(device_id, self._links[device_id])

    def broker(self) -> EventStream:
        """The broker's restarts."""
        return self._stream(None, None)

    def _stream(self, key: str | None, link: str | None) -> EventStream:
        s = self._streams.get(key)
        if s is None:
            sc = self._scenario
            procs = [_Process(sc.seed, key, kind, rate, mean, max_bytes, sc.start)
                     for kind, rate, mean, max_bytes in _kinds_for(link, sc.faults) if rate > 0.0]
            s = self._streams[key] = EventStream(procs, self._scripted.get(key, []))
        return s
