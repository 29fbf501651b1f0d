"""One run of a street, end to end: broker, gateway, devices, faults, live view, summary and truth check.

Used by the demo (`python -m simulator.demo`) and the CLI (`kerbline-sim run`). In order:
1. `preflight()`: everything the run needs is there, else one line naming what is missing;
2. a run directory (a new temp dir unless given; kept afterwards, its path printed) with fresh keys;
3. the simulator's own mosquitto (free loopback port, device ACLs, a password per device) when any device
   is on MQTT;
4. the gateway as a real process (`python -m gateway run --config RUN/gateway/gateway.toml`), its registry
   holding every device, its JSON Lines sink writing `RUN/readings.jsonl`;
5. the world with its ground truth (`RUN/truth.jsonl`) on a paced clock, and the devices: faithful
   MicroPython processes (`FaithfulStreet`) and/or the fleet (`simulator.fleet`, MQTT devices in one
   process), with the world's faults played on links, power and the broker;
6. the live view until the scenario's end (or Ctrl-C / SIGTERM; `keep_running` goes on past the end);
7. the devices stop, the gateway gets `drain_s` to write out what it holds, then SIGTERM;
8. the summary (reports sent, acked, upstream, rejections by reason, alarms, faults) and the truth check
   (simulator.truthcheck). The exit status is 0 only when the run completed and the check passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import secrets
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TextIO

from simulator.devices import provision
from simulator.devices.faithful import FaithfulDevice, FaithfulStreet
from simulator.devices.runner import DEFAULT_HEAP
from simulator.links.broker import GATEWAY_USER, Broker
from simulator.live import LiveView, Row, Snapshot
from simulator.scenario import DeviceSpec, Scenario
from simulator.stack import GatewayProcess, MqttAccess, StackError, metric_sum, preflight
from simulator.truthcheck import CheckResult, Upstream, check
from simulator.world import TruthLog, World

VIEW_EVERY_S = 0.5
METRICS_EVERY_S = 2.0
QUIET_S = 2.0  # drain: the upstream file has not grown for this long


@dataclass
class RunOptions:
    scenario: Scenario
    run_dir: Path | None = None
    keep_running: bool = False
    heap: str = DEFAULT_HEAP
    drain_s: float = 20.0
    plain: bool = False
    check: bool = True


@dataclass
class RunSummary:
    completed: bool
    lines: list[str]
    check: CheckResult | None

    @property
    def ok(self) -> bool:
        return self.completed and (self.check is None or self.check.ok)


class StreetRun:
    """Sets up and runs one scenario; `await run()` returns the summary (also printed to `out`)."""

    def __init__(self, options: RunOptions, out: TextIO = sys.stdout) -> None:
        self.o = options
        self.sc = options.scenario
        self.out = out
        self.specs = list(self.sc.devices)
        self.run_dir = Path(options.run_dir or tempfile.mkdtemp(prefix=f"kerbline-{self.sc.name}-"))
        self.broker: Broker | None = None
        self.gateway: GatewayProcess | None = None
        self.street: FaithfulStreet | None = None
        self.upstream = Upstream(self.run_dir / "readings.jsonl")
        self.events: deque[str] = deque(maxlen=50)
        self._metrics: dict = {}  # type: ignore[type-arg]
        self._stop = asyncio.Event()
        self._alarms_seen: dict[str, tuple[str, ...]] = {}
        self.wall0 = 0.0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def run(self) -> RunSummary:
        need_mqtt = any(s.link == "mqtt" for s in self.specs)
        need_serial = any(s.link == "serial" for s in self.specs)
        preflight(need_mqtt, need_serial)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"Kerbline simulator: scenario {self.sc.name!r}, {len(self.specs)} devices, run directory {self.run_dir}")
        keys = {s.id: provision.new_key() for s in self.specs}
        passwords = {s.id: secrets.token_hex(12) for s in self.specs if s.link == "mqtt"}
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        truth = TruthLog(self.run_dir / "truth.jsonl")
        completed = False
        try:
            mqtt = None
            if need_mqtt:
                gateway_password = secrets.token_hex(12)
                self.broker = Broker(self.run_dir / "broker", passwords={GATEWAY_USER: gateway_password, **passwords})
                await asyncio.to_thread(self.broker.start)
                mqtt = MqttAccess(self.broker.host, self.broker.port, password=gateway_password)
                self.say(f"broker: mosquitto on {self.broker.host}:{self.broker.port}")
            ports = [FaithfulStreet.port_path(self.run_dir, s.id) for s in self.specs if s.link == "serial"]
            self.gateway = GatewayProcess(self.run_dir, registry_text=provision.registry_toml(
                [(s, keys[s.id]) for s in self.specs], self.sc), mqtt=mqtt, serial_ports=ports)
            await self.gateway.start()
            self.say(f"gateway: running, HTTP API {self.gateway.url}, log {self.gateway.log_path}")
            world = World(self.sc, truth)
            clock = world.clock(paced=True)
            self.wall0 = time.time()
            self.street = FaithfulStreet(world, clock, self.run_dir, self.specs, broker=self.broker, heap=self.o.heap,
                                         passwords=passwords, keys=keys)
            self.street.faults.on_event = self._fault_event
            await self.street.start()
            completed = await self._watch(world, clock)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._shutdown()
            truth.close()
        return self._summary(completed)

    async def _watch(self, world: World, clock: object) -> bool:
        """Play faults and draw the view until the end (True) or until stopped (False)."""
        assert self.street is not None
        end = math.inf if self.o.keep_running else self.sc.end
        faults = asyncio.ensure_future(self.street.play_faults(end))
        view = LiveView(self.out, force_plain=self.o.plain)
        view.start()
        last_metrics = 0.0
        try:
            while not self._stop.is_set():
                now = self.street.clock.now()
                if now >= end:
                    break
                self.upstream.poll()
                if time.monotonic() - last_metrics > METRICS_EVERY_S and self.gateway is not None:
                    last_metrics = time.monotonic()
                    self._metrics = await self.gateway.metrics()
                view.update(self.snapshot(world))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), VIEW_EVERY_S)
            view.update(self.snapshot(world))
        finally:
            view.close()
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
        return not self._stop.is_set()

    def _fault_event(self, t: float, device: str | None, kind: str) -> None:
        self.events.append(f"{self._when(t)}  fault  {kind} on {device or 'the broker'}")

    def _when(self, t: float) -> str:
        import datetime as dt

        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M")

    # ------------------------------------------------------------------ view

    def snapshot(self, world: World) -> Snapshot:
        assert self.street is not None
        street = self.street
        rows = [self._row(world, d) for d in street.devices.values()]
        for d in street.devices.values():
            alarms = d.tap.alarms
            new = set(alarms) - set(self._alarms_seen.get(d.spec.id, ()))
            for name in sorted(new):
                self.events.append(f"{self._when(street.clock.now())}  alarm  {name} raised by {d.spec.id}")
            self._alarms_seen[d.spec.id] = alarms
        taps = [d.tap for d in street.devices.values()]
        rejected = metric_sum(self._metrics, "kerbline_rejected_total", "reason")
        totals = [
            ("devices", f"{sum(1 for d in street.devices.values() if d.runner.state.value == 'running')}"
                        f"/{len(street.devices)} on"),
            ("reports sent", str(sum(t.sent for t in taps))),
            ("acked", str(sum(t.acked for t in taps))),
            ("queued", str(sum(t.queued for t in taps))),
            ("upstream", str(len(self.upstream.reports))),
            ("alarms upstream", _counts(self.upstream.alarms)),
            ("rejected", _counts({k: int(v) for k, v in rejected.items() if v})),
            ("faults", _counts(street.faults.applied)),
        ]
        site = self.sc.sites[0]
        return Snapshot(
            title=f"Kerbline street simulator: {self.sc.name} ({', '.join(s.name for s in self.sc.sites)})",
            sim_now=street.clock.now(), sim_start=self.sc.start, sim_end=None if self.o.keep_running else self.sc.end,
            wall_elapsed=time.time() - self.wall0, factor=street.clock.factor, tz=site.tz, rows=rows, totals=totals,
            events=list(self.events))

    def _row(self, world: World, d: FaithfulDevice) -> Row:
        spec, tap = d.spec, d.tap
        last = {r.name: r.value for r in tap.last.readings} if tap.last is not None else {}
        if spec.kind == "bin":
            truth = f"fill {world.bin(spec.id).level * 100:3.0f}%"
            sent = f"fill {last['fill']}%" if "fill" in last else ("-" if not last else "no fill value")
            if "temp" in last:
                sent += f" {last['temp']:.0f}C"
        else:
            lamp = world.light(spec.id)
            truth = "FAILED" if lamp.failed else (f"lamp on {lamp.dim * 100:.0f}%" if lamp.on else "lamp off")
            sent = (f"lamp {'on' if last.get('lamp') else 'off'}" + (f" {last['lux']} lx" if "lux" in last else "")) \
                if last else "-"
        return Row(spec.id, spec.kind, spec.link, d.runner.state.value, truth, sent, tap.alarms, tap.sent, tap.acked,
                   tap.queued)

    # ------------------------------------------------------------------ end

    async def _shutdown(self) -> None:
        if self.street is not None:
            await self.street.stop()
        if self.gateway is not None and self.gateway.running:
            await self._drain()
            self._metrics = await self.gateway.metrics() or self._metrics
            code = await self.gateway.stop()
            if code not in (0, None):
                self.events.append(f"gateway exited with {code}; log {self.gateway.log_path}")
        if self.broker is not None:
            self.broker.stop()
        self.upstream.poll()

    async def _drain(self) -> None:
        """Give the gateway up to `drain_s` to write out what it has: until the file stops growing."""
        deadline = time.monotonic() + self.o.drain_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.upstream.poll():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > QUIET_S:
                return
            await asyncio.sleep(0.2)

    def _summary(self, completed: bool) -> RunSummary:
        lines = ["", f"Summary of {self.sc.name!r} ({'completed' if completed else 'stopped early'}); "
                     f"run directory {self.run_dir}"]
        result = None
        if self.street is not None:
            taps = [d.tap for d in self.street.devices.values()]
            rejected = metric_sum(self._metrics, "kerbline_rejected_total", "reason")
            stored = metric_sum(self._metrics, "kerbline_reports_stored_total")
            lines += [
                f"  devices {len(taps)}: reports sent {sum(t.sent for t in taps)} (resent copies "
                f"{sum(t.resent for t in taps)}), acked {sum(t.acked for t in taps)}, still queued "
                f"{sum(t.queued for t in taps)}",
                f"  gateway: stored {int(sum(stored.values()))}, rejected "
                f"{_counts({k: int(v) for k, v in rejected.items() if v}) or 'none'}",
                f"  upstream ({self.upstream.path.name}): {len(self.upstream.reports)} reports, "
                f"{len(self.upstream.readings)} readings, alarms {_counts(self.upstream.alarms) or 'none'}",
                f"  faults played: {_counts(self.street.faults.applied) or 'none'}",
            ]
            for d in self.street.devices.values():
                s = d.runner.stats
                lines.append(f"    {d.spec.id:<10} {d.spec.link:<6} boots {s.boots:>4} sleeps {s.deep_sleeps:>4} "
                             f"resets {s.resets} watchdog {s.watchdog} crashes {s.crashes} power cuts {s.power_cuts} "
                             f"brownouts {s.brownouts}  sent {d.tap.sent} acked {d.tap.acked}")
            if self.o.check and self.street.clock.factor:
                factor = self.street.clock.factor
                wall0, sim0 = self.wall0, self.sc.start
                result = check(self.run_dir / "truth.jsonl", self.upstream, lambda t: sim0 + (t - wall0) * factor,
                               window_s=max(600.0, 3.0 * factor), devices=set(self.street.devices))
                lines.append(f"  ground truth check: {'PASSED' if result.ok else 'FAILED'}")
                lines += result.lines()
        summary = RunSummary(completed, lines, result)
        for line in lines:
            self.say(line)
        return summary


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()) if v)


async def run_street(options: RunOptions, out: TextIO = sys.stdout) -> int:
    """Run and return the exit status (0 ok, 1 the run or the check failed, 2 a part is missing)."""
    try:
        summary = await StreetRun(options, out).run()
    except StackError as e:
        out.write(f"error: {e}\n")
        return 2
    return 0 if summary.ok else 1


def with_overrides(scenario: Scenario, duration_s: float | None = None, time_factor: float | None = None) -> Scenario:
    """The scenario with another duration and/or time factor (scripted events past the new end never come)."""
    return dataclasses.replace(scenario, duration_s=scenario.duration_s if duration_s is None else duration_s,
                               time_factor=scenario.time_factor if time_factor is None else time_factor)


__all__ = ["DeviceSpec", "RunOptions", "RunSummary", "StreetRun", "run_street", "with_overrides"]
