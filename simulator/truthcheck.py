"""Did what reached upstream match what the street did? The gateway's JSON Lines output against the ground truth.

`Upstream` reads the JSON Lines sink's file (`readings.jsonl`, one reading per line with device, boot,
seq, name, value, unit, time) as it grows: distinct reports, readings, alarms and the latest value of
each (device, name), for the live view and the summary.

`check()` compares every measured reading upstream with the ground truth the world wrote
(`simulator.world.truth`): a reading matches when some truth value of the same device and quantity,
taken within `window_s` of the reading's simulated time (`time_of`: a faithful device's clock is the host's, which
the run's paced clock maps to simulated time; a fleet device's clock is simulated time), is within the quantity's tolerance. Tolerances are the
sensor chain's own resolution plus the noise the scenario injects (`TOLERANCE`); a quantity whose device
value is not the world's value by design (`energy`: integrated by the device over its own time;
`power`: V x I, apparent power, where the world's is real power) is not compared. Readings the world
tampered with (a `fault.<quantity>` line within the window for the quantity or one it is computed with,
`DEPENDS`: a wet, stuck sonar reads a stale value until the firmware notices; a failed temperature read
times the sonar at 20 C) are counted as `excused`, not as matches or mismatches.

A reading whose time the gateway estimated (`time_estimated`: the device's clock was not set, so the
gateway took the boot's start as the earliest `arrival - uptime` seen so far) may be late by however long
the report waited on the device, never early: it is compared with every truth value up to its time plus
the window, and counted in `estimated`.

Alarms: every truth event that should raise one (`fire`, `tilt`, `lamp_fail`) is looked for upstream as an
`alarm` reading of that kind from that device after the event. It is missing (a failure) only when a
report the device made late enough to show it (`DETECT_S` after the event) reached upstream without it;
when no such report arrived before the run ended it is listed as pending, not failed.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from simulator.world import read_truth

# quantity -> (truth value -> wire value, absolute tolerance, relative tolerance)
TOLERANCE: dict[str, tuple[Callable[[Any], float], float, float]] = {
    "fill": (lambda v: float(v) * 100.0, 2.0, 0.0),  # percent; the sonar's mm and the rounding
    "dist": (float, 10.0, 0.0),  # mm; echo timing and the median of five pings
    "temp": (float, 0.5, 0.0),  # degC; DS18B20 steps of 1/16 plus the injected noise
    "batt": (float, 30.0, 0.0),  # mV; ADC steps and the injected noise
    "lux": (float, 2.0, 0.03),  # lx; BH1750 counts at its measurement time
    "volt": (float, 3.0, 0.0),  # V; ADC steps through the divider
    "curr": (float, 8.0, 0.02),  # mA; ADC steps through the shunt amplifier
    "lamp": (bool, 0.0, 0.0),
    "dim": (lambda v: float(v) * 100.0, 1.0, 0.0),  # percent of full
}
# the sensors whose faults can change a reading: the sonar's distance (and the fill from it) is timed with
# the speed of sound at the enclosure temperature, which falls back to 20 C when the DS18B20 fails
DEPENDS = {"dist": ("dist", "temp"), "fill": ("dist", "temp")}
ALARM_EVENTS = {"fire": "fire", "tilt": "tilt", "lamp_fail": "lamp_fail"}
# how long after the event a report can be expected to show the alarm: a fire trips 70 C about 10 minutes
# after ignition (simulator/world/bins.py), a knock-over and a lamp failure at the next sample
DETECT_S = {"fire": 1800.0, "tilt": 0.0, "lamp_fail": 0.0}
MAX_EXAMPLES = 20


class Upstream:
    """The JSON Lines sink's file, read incrementally (`poll()` reads what was appended)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.readings: list[dict[str, Any]] = []
        self.reports: set[tuple[str, int, int]] = set()
        self.alarms: Counter[str] = Counter()
        self.latest: dict[tuple[str, str], Any] = {}
        self.bad_lines = 0
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Read the lines appended since the last call; returns how many readings were new."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = 0
        for line in lines:
            try:
                r = json.loads(line)
                key = (str(r["device"]), int(r["boot"]), int(r["seq"]))
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
                continue
            self.readings.append(r)
            self.reports.add(key)
            if r.get("name") == "alarm":
                self.alarms[str(r.get("value"))] += 1
            else:
                self.latest[(key[0], str(r.get("name")))] = r.get("value")
            new += 1
        return new

    def device_alarms(self, device: str) -> list[dict[str, Any]]:
        return [r for r in self.readings if r["device"] == device and r.get("name") == "alarm"]


@dataclass
class CheckResult:
    matched: Counter[str] = field(default_factory=Counter)
    mismatched: Counter[str] = field(default_factory=Counter)
    excused: Counter[str] = field(default_factory=Counter)
    no_truth: Counter[str] = field(default_factory=Counter)
    estimated: Counter[str] = field(default_factory=Counter)  # readings whose time the gateway estimated
    examples: list[str] = field(default_factory=list)
    alarms_expected: list[tuple[str, str, float]] = field(default_factory=list)  # device, kind, truth time
    alarms_missing: list[tuple[str, str, float]] = field(default_factory=list)
    alarms_pending: list[tuple[str, str, float]] = field(default_factory=list)  # no report late enough yet

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.no_truth and not self.alarms_missing and sum(self.matched.values()) > 0

    def lines(self) -> list[str]:
        out = []
        for q in sorted(set(self.matched) | set(self.mismatched) | set(self.excused) | set(self.no_truth)):
            out.append(f"  {q:<6} {self.matched[q]:>6} match   {self.mismatched[q]:>4} differ   "
                       f"{self.excused[q]:>4} excused (fault)   {self.no_truth[q]:>4} without truth   "
                       f"({self.estimated[q]} with an estimated time)")
        for device, kind, t in self.alarms_expected:
            state = ("NOT upstream" if (device, kind, t) in self.alarms_missing else
                     "no report late enough to show it" if (device, kind, t) in self.alarms_pending else
                     "alarm upstream")
            out.append(f"  {kind} on {device} (truth t={t:.0f}): {state}")
        out += ["  " + e for e in self.examples]
        return out


def check(truth_path: Path, upstream: Upstream, time_of: Callable[[Mapping[str, Any]], float], window_s: float,
          devices: set[str] | None = None) -> CheckResult:
    """Compare every measured upstream reading (of `devices`, default all) with the ground truth.
    `time_of(reading)` is the reading's simulated time (from its `time` and the run's clocks)."""
    values: dict[tuple[str, str], tuple[list[float], list[Any]]] = defaultdict(lambda: ([], []))
    faults: dict[tuple[str, str], list[float]] = defaultdict(list)
    events: list[tuple[str, str, float]] = []
    for rec in read_truth(truth_path):
        if rec.device is None or (devices is not None and rec.device not in devices):
            continue
        if rec.quantity.startswith("fault."):
            faults[(rec.device, rec.quantity[6:])].append(rec.t)
        elif rec.quantity == "event":
            if rec.value in ALARM_EVENTS:
                events.append((rec.device, ALARM_EVENTS[rec.value], rec.t))
        elif rec.quantity in TOLERANCE:
            ts, vs = values[(rec.device, rec.quantity)]
            ts.append(rec.t)
            vs.append(rec.value)
    result = CheckResult()
    for r in upstream.readings:
        name, device = str(r.get("name")), str(r.get("device"))
        if name not in TOLERANCE or (devices is not None and device not in devices):
            continue
        t = time_of(r)
        convert, tol_abs, tol_rel = TOLERANCE[name]
        ts, vs = values.get((device, name), ([], []))
        hi = bisect.bisect_right(ts, t + window_s)
        if r.get("time_estimated"):
            result.estimated[name] += 1
            lo = 0  # the gateway's estimate is never earlier than the truth (see the module docstring)
        else:
            lo = bisect.bisect_left(ts, t - window_s)
        if lo == hi:
            result.no_truth[name] += 1
            _example(result, f"{device} {name}={r['value']} at sim t={t:.0f}: no truth within {window_s:.0f} s")
            continue
        value = r["value"]
        if any(_close(value, convert(v), tol_abs, tol_rel) for v in vs[lo:hi]):
            result.matched[name] += 1
            continue
        if any(bisect.bisect_left(ft, t - window_s) != bisect.bisect_right(ft, t + window_s)
               for ft in (faults.get((device, q), []) for q in DEPENDS.get(name, (name,)))):
            result.excused[name] += 1
            continue
        result.mismatched[name] += 1
        nearest = min(range(lo, hi), key=lambda i: abs(ts[i] - t))
        _example(result, f"{device} {name}={value} at sim t={t:.0f}: truth {convert(vs[nearest]):.3f} "
                         f"at t={ts[nearest]:.0f}")
    latest: dict[str, float] = {}
    for r in upstream.readings:
        device = str(r.get("device"))
        latest[device] = max(latest.get(device, -math.inf), time_of(r))
    for device, kind, t in sorted(events, key=lambda e: e[2]):
        result.alarms_expected.append((device, kind, t))
        if any(r.get("value") == kind and time_of(r) >= t - window_s for r in upstream.device_alarms(device)):
            continue
        if latest.get(device, -math.inf) < t + DETECT_S[kind] + window_s:
            result.alarms_pending.append((device, kind, t))
        else:
            result.alarms_missing.append((device, kind, t))
    return result


def _close(value: Any, truth: float, tol_abs: float, tol_rel: float) -> bool:
    if isinstance(value, bool) or isinstance(truth, bool):
        return bool(value) == bool(truth)
    try:
        return abs(float(value) - truth) <= tol_abs + tol_rel * abs(truth)
    except (TypeError, ValueError):
        return False


def _example(result: CheckResult, text: str) -> None:
    if len(result.examples) < MAX_EXAMPLES:
        result.examples.append(text)
