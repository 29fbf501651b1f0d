"""One run of a street, end to end: broker, gateway, devices, faults, live view, summary and truth check.

Used by the demo (`python -m simulator.demo`) and the CLI (`kerbline-sim run`). In order:
1. `preflight()`: everything the run needs is there, else one line naming what is missing;
2. a run directory (a new temp dir unless given; kept afterwards, its path printed) with fresh keys;
3. the simulator's own mosquitto (free loopback port, device ACLs, a password per device) when any device
   is on MQTT;
4. the gateway as a real process (`python -m gateway run --config RUN/gateway/gateway.toml`), its registry
   holding every device, its JSON Lines sink writing `RUN/readings.jsonl`;
5. the world with its ground truth (`RUN/truth.jsonl`), and the devices: faithful MicroPython processes
   (`FaithfulStreet`, every device in `faithful` mode, the serial ones in `fleet` mode) and the fleet
   (`simulator.fleet.Fleet`, the MQTT devices in `fleet` mode, in this process), with the world's faults
   played on links, power and the broker. The clock is paced by the scenario's factor; a fleet-only run
   may be `stepped` (as fast as the fleet and the broker go);
6. the live view until the scenario's end (or Ctrl-C / SIGTERM; `keep_running` goes on past the end);
7. the devices stop, the gateway gets `drain_s` to write out what it holds, then SIGTERM;
8. the summary (reports sent, acked, upstream, rejections by reason, alarms, faults) and the truth check
   (simulator.truthcheck). The exit status is 0 only when the run completed and the check passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from kerbline.app import ALARMS
from simulator.devices import provision
from simulator.devices.faithful import FaithfulDevice, FaithfulStreet
from simulator.devices.runner import DEFAULT_HEAP
from simulator.fleet.fleet import Fleet, tune_gc
from simulator.links.broker import FLEET_USER, GATEWAY_USER, Broker
from simulator.links.faults import FaultPlayer, broker_handlers
from simulator.live import LiveView, Row, Snapshot
from simulator.scenario import Scenario
from simulator.stack import GatewayProcess, MqttAccess, StackError, metric_sum, preflight
from simulator.truthcheck import CheckResult, Upstream, check
from simulator.world import SimClock, TruthLog, World

VIEW_EVERY_S = 0.5
METRICS_EVERY_S = 2.0
QUIET_S = 2.0  # drain: the upstream file has not grown for this long
FLEET_ROWS = 20


@dataclass
class RunOptions:
    scenario: Scenario
    run_dir: Path | None = None
    mode: str = "faithful"  # "faithful" | "fleet"
    stepped: bool = False  # fleet only: as fast as possible instead of paced
    shared: int | None = None  # fleet: shared connections (None: one per device)
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
        if options.mode not in ("faithful", "fleet"):
            raise StackError(f"unknown mode {options.mode!r} (faithful or fleet)")
        self.o = options
        self.sc = options.scenario
        self.out = out
        specs = list(self.sc.devices)
        in_fleet = options.mode == "fleet"
        self.faithful_specs = [s for s in specs if not (in_fleet and s.link == "mqtt")]
        self.fleet_specs = [s for s in specs if in_fleet and s.link == "mqtt"]
        if options.stepped and self.faithful_specs:
            raise StackError("a stepped run needs every device in the fleet (MQTT only): faithful devices "
                             "live in wall time")
        self.run_dir = Path(options.run_dir or tempfile.mkdtemp(prefix=f"kerbline-{self.sc.name}-"))
        self.broker: Broker | None = None
        self.gateway: GatewayProcess | None = None
        self.street: FaithfulStreet | None = None
        self.fleet: Fleet | None = None
        self.clock: SimClock | None = None
        self.broker_faults: FaultPlayer | None = None
        self.upstream = Upstream(self.run_dir / "readings.jsonl")
        self.events: deque[str] = deque(maxlen=50)
        self._metrics: dict[Any, float] = {}
        self._stop = asyncio.Event()
        self._last_metrics = 0.0
        self._alarms_seen: dict[str, tuple[str, ...]] = {}
        self.wall0 = 0.0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ------------------------------------------------------------------ the run

    async def run(self) -> RunSummary:
        specs = self.faithful_specs + self.fleet_specs
        need_mqtt = any(s.link == "mqtt" for s in specs)
        preflight(need_mqtt, any(s.link == "serial" for s in specs), any(s.link == "mqtt" for s in self.faithful_specs))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"Kerbline simulator: scenario {self.sc.name!r}, {len(self.faithful_specs)} faithful devices, "
                 f"{len(self.fleet_specs)} in the fleet; run directory {self.run_dir}")
        keys = {s.id: provision.new_key() for s in specs}
        passwords = {s.id: secrets.token_hex(12) for s in specs if s.link == "mqtt"}
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        truth = TruthLog(self.run_dir / "truth.jsonl")
        completed = False
        try:
            mqtt = None
            if need_mqtt:
                gateway_password, fleet_password = secrets.token_hex(12), secrets.token_hex(12)
                self.broker = Broker(self.run_dir / "broker", fleet_user=bool(self.o.shared),
                                     passwords={GATEWAY_USER: gateway_password, **passwords,
                                                **({FLEET_USER: fleet_password} if self.o.shared else {})})
                await asyncio.to_thread(self.broker.start)
                mqtt = MqttAccess(self.broker.host, self.broker.port, password=gateway_password)
                self.say(f"broker: mosquitto on {self.broker.host}:{self.broker.port}")
            ports = [FaithfulStreet.port_path(self.run_dir, s.id) for s in self.faithful_specs if s.link == "serial"]
            self.gateway = GatewayProcess(self.run_dir, registry_text=provision.registry_toml(
                [(s, keys[s.id]) for s in specs], self.sc), mqtt=mqtt, serial_ports=ports)
            await self.gateway.start()
            self.say(f"gateway: running, HTTP API {self.gateway.url}, log {self.gateway.log_path}")
            world = World(self.sc, truth)
            self.clock = clock = world.clock(paced=not self.o.stepped)
            self.wall0 = time.time()
            # how host time maps to simulated time in this run, for checking its files afterwards
            (self.run_dir / "run.json").write_text(json.dumps({
                "scenario": self.sc.name, "seed": self.sc.seed, "sim_start": self.sc.start, "wall_start": self.wall0,
                "factor": clock.factor, "faithful": [s.id for s in self.faithful_specs],
                "fleet": [s.id for s in self.fleet_specs]}))
            self.street = FaithfulStreet(world, clock, self.run_dir, self.faithful_specs, broker=self.broker,
                                         heap=self.o.heap, passwords=passwords, keys=keys)
            self.street.faults.on_event = self._fault_event
            await self.street.start()
            if self.fleet_specs:
                assert self.broker is not None
                self.fleet = Fleet(world, self.fleet_specs, keys, clock, host=self.broker.host, port=self.broker.port,
                                   connections=self.o.shared, passwords=passwords,
                                   fleet_password=fleet_password if self.o.shared else None,
                                   state_dir=self.run_dir / "fleet")
                (self.run_dir / "fleet").mkdir(exist_ok=True)
                await self.fleet.connect()
                self.fleet.start()
                tune_gc()
                self.say(f"fleet: {len(self.fleet.devices)} devices connected "
                         f"({'%d shared connections' % self.o.shared if self.o.shared else 'one connection each'})")
            completed = await self._watch(world)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._shutdown()
            truth.close()
        return self._summary(completed)

    async def _watch(self, world: World) -> bool:
        """Play faults and the fleet, draw the view, until the end (True) or until stopped (False)."""
        assert self.street is not None and self.clock is not None
        end = math.inf if self.o.keep_running else self.sc.end
        tasks = [asyncio.ensure_future(self.street.play_faults(end))]
        if self.broker is not None and self.clock.paced:
            self.broker_faults = FaultPlayer(self.clock)
            self.broker_faults.on_event = self._fault_event
            tasks.append(asyncio.ensure_future(self.broker_faults.play(world.faults.broker(),
                                                                       broker_handlers(self.broker), end)))
        if self.fleet is not None:
            tasks.append(asyncio.ensure_future(self.fleet.run(end)))
        view = LiveView(self.out, force_plain=self.o.plain)
        view.start()
        self._last_metrics = 0.0
        try:
            while not self._stop.is_set():
                if self.clock.now() >= end or (self.fleet is not None and tasks[-1].done()):
                    break
                await self._refresh(view, world)
            completed = not self._stop.is_set()
            await self._end_faults(tasks)
            if completed:
                await self._settle(view, world)
            self.upstream.poll()
            view.update(self.snapshot(world))
        finally:
            view.close()
            await self._end_faults(tasks)
        return completed

    async def _refresh(self, view: LiveView, world: World) -> None:
        """One turn of the view: read the upstream file, the gateway's counters now and then, draw, wait."""
        self.upstream.poll()
        if time.monotonic() - self._last_metrics > METRICS_EVERY_S and self.gateway is not None:
            self._last_metrics = time.monotonic()
            self._metrics = await self.gateway.metrics()
        view.update(self.snapshot(world))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), VIEW_EVERY_S)

    async def _end_faults(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stop playing faults and end the ones in progress (cables in, power on, network and broker back)."""
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                self.events.append(f"error: {result!r}")
        tasks.clear()
        for player in (self.street.faults if self.street is not None else None, self.broker_faults):
            if player is not None:
                await player.finish()
        if self.fleet is not None:
            self.fleet.finish_faults()

    async def _settle(self, view: LiveView, world: World) -> None:
        """Past the end, the street keeps running without faults for at most `drain_s`, until every device
        has had what it sent acknowledged: what is still in a device's queue when a run stops is not lost,
        but it is not upstream either."""
        assert self.street is not None
        deadline = time.monotonic() + self.o.drain_s
        self.events.append("end of the scenario: faults over, waiting for the devices' queues to empty")
        while time.monotonic() < deadline and not self._stop.is_set():
            waiting = self.street.queued
            if self.fleet is not None:
                self.fleet.pump()
                waiting += self.fleet.outstanding + self.fleet.queued
            if not waiting:
                return
            await self._refresh(view, world)

    def _fault_event(self, t: float, device: str | None, kind: str) -> None:
        self.events.append(f"{_hhmm(t)}  fault  {kind} on {device or 'the broker'}")

    # ------------------------------------------------------------------ view

    def snapshot(self, world: World) -> Snapshot:
        assert self.street is not None and self.clock is not None
        street, fleet = self.street, self.fleet
        now = self.clock.now()
        rows = [self._row(world, d) for d in street.devices.values()]
        for d in street.devices.values():
            new = set(d.tap.alarms) - set(self._alarms_seen.get(d.spec.id, ()))
            for name in sorted(new):
                self.events.append(f"{_hhmm(now)}  alarm  {name} raised by {d.spec.id}")
            self._alarms_seen[d.spec.id] = d.tap.alarms
        taps = [d.tap for d in street.devices.values()]
        sent, acked, queued = (sum(t.sent for t in taps), sum(t.acked for t in taps), sum(t.queued for t in taps))
        on = sum(1 for d in street.devices.values() if d.runner.state.value == "running")
        faults: Counter[str] = Counter(street.faults.applied)
        if self.broker_faults is not None:
            faults.update(self.broker_faults.applied)
        if fleet is not None:
            sent, acked, queued = sent + fleet.stats.published, acked + fleet.stats.acked, queued + fleet.queued
            on += sum(1 for d in fleet.devices.values() if d.powered)
            faults.update(fleet.stats.faults)
            rows += self._fleet_rows(fleet)
        rejected = metric_sum(self._metrics, "kerbline_rejected_total", "reason")
        totals = [
            ("devices", f"{on}/{len(street.devices) + (len(fleet.devices) if fleet else 0)} on"),
            ("reports sent", str(sent)), ("acked", str(acked)), ("queued", str(queued)),
            ("upstream", str(len(self.upstream.reports))),
            ("alarms upstream", _counts(self.upstream.alarms) or "none"),
            ("rejected", _counts({k: int(v) for k, v in rejected.items() if v}) or "none"),
            ("faults", _counts(faults) or "none"),
        ]
        return Snapshot(
            title=f"Kerbline street simulator: {self.sc.name} ({', '.join(s.name for s in self.sc.sites[:3])}"
                  f"{', ...' if len(self.sc.sites) > 3 else ''})",
            sim_now=now, sim_start=self.sc.start, sim_end=None if self.o.keep_running else self.sc.end,
            wall_elapsed=time.time() - self.wall0, factor=self.clock.factor, tz=self.sc.sites[0].tz, rows=rows,
            totals=totals, events=list(self.events))

    def _row(self, world: World, d: FaithfulDevice) -> Row:
        spec, tap = d.spec, d.tap
        last = {r.name: r.value for r in tap.last.readings} if tap.last is not None else {}
        if spec.kind == "bin":
            truth = f"fill {world.bin(spec.id).level * 100:3.0f}%"
            sent = f"fill {last['fill']}%" if "fill" in last else ("-" if not last else "no fill value")
            if "temp" in last:
                sent += f" {float(last['temp']):.0f}C"
        else:
            lamp = world.light(spec.id)
            truth = "FAILED" if lamp.failed else (f"lamp on {lamp.dim * 100:.0f}%" if lamp.on else "lamp off")
            sent = (f"lamp {'on' if last.get('lamp') else 'off'}" + (f" {last['lux']} lx" if "lux" in last else "")) \
                if last else "-"
        return Row(spec.id, spec.kind, spec.link, d.runner.state.value, truth, sent, tap.alarms, tap.sent, tap.acked,
                   tap.queued)

    def _fleet_rows(self, fleet: Fleet) -> list[Row]:
        """The fleet's devices with an alarm active (at most FLEET_ROWS)."""
        rows = []
        for device in fleet.devices.values():
            bits = device.app.state.alarms if device.app is not None else 0
            if not bits:
                continue
            names = tuple(name for i, name in enumerate(ALARMS) if bits >> i & 1)
            rows.append(Row(device.id, device.kind, "fleet", "on" if device.powered else "off", "-", "-", names,
                            device.reports, 0, len(device.queue)))
            if len(rows) >= FLEET_ROWS:
                break
        return rows

    # ------------------------------------------------------------------ end

    async def _shutdown(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
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
        rejected = metric_sum(self._metrics, "kerbline_rejected_total", "reason")
        stored = metric_sum(self._metrics, "kerbline_reports_stored_total")
        street, fleet = self.street, self.fleet
        if street is not None and street.devices:
            taps = [d.tap for d in street.devices.values()]
            lines.append(f"  faithful devices {len(taps)}: reports sent {sum(t.sent for t in taps)} (resent copies "
                         f"{sum(t.resent for t in taps)}), acked {sum(t.acked for t in taps)}, still queued "
                         f"{sum(t.queued for t in taps)}")
            for d in street.devices.values():
                s = d.runner.stats
                lines.append(f"    {d.spec.id:<10} {d.spec.link:<6} boots {s.boots:>4} sleeps {s.deep_sleeps:>4} "
                             f"resets {s.resets} watchdog {s.watchdog} crashes {s.crashes} power cuts {s.power_cuts} "
                             f"brownouts {s.brownouts}  sent {d.tap.sent} acked {d.tap.acked}")
        if fleet is not None:
            fs = fleet.stats
            lines.append(f"  fleet devices {len(fleet.devices)}: reports {fs.reports}, published {fs.published}, "
                         f"acked {fs.acked}, still queued {fleet.queued}, reconnects {fs.reconnects}, "
                         f"commands {_counts(fs.commands) or 'none'}")
        faults: Counter[str] = Counter(street.faults.applied if street is not None else {})
        if self.broker_faults is not None:
            faults.update(self.broker_faults.applied)
        if fleet is not None:
            faults.update(fleet.stats.faults)
        lines += [
            f"  gateway: stored {int(sum(stored.values()))}, rejected "
            f"{_counts({k: int(v) for k, v in rejected.items() if v}) or 'none'}",
            f"  upstream ({self.upstream.path.name}): {len(self.upstream.reports)} reports, "
            f"{len(self.upstream.readings)} readings, alarms {_counts(self.upstream.alarms) or 'none'}",
            f"  faults played: {_counts(faults) or 'none'}",
        ]
        result = None
        if self.o.check and self.clock is not None:
            result = check(self.run_dir / "truth.jsonl", self.upstream, self._time_of(), window_s=self._window())
            lines.append(f"  ground truth check: {'PASSED' if result.ok else 'FAILED'}")
            lines += result.lines()
        summary = RunSummary(completed, lines, result)
        for line in lines:
            self.say(line)
        return summary

    def _time_of(self) -> Callable[[Mapping[str, Any]], float]:
        """A reading's simulated time. Fleet devices' clocks are simulated time already; faithful devices'
        clocks are the host's, which the paced clock maps (their reports' times come from them)."""
        assert self.clock is not None
        factor = self.clock.factor or 1.0
        wall0, sim0 = self.wall0, self.sc.start
        fleet_ids = set(self.fleet.devices) if self.fleet is not None else set()

        def time_of(reading: Mapping[str, Any]) -> float:
            t = float(reading["time"])
            return t if reading["device"] in fleet_ids else sim0 + (t - wall0) * factor

        return time_of

    def _window(self) -> float:
        """How far a reading's time may be from the truth it shows: a faithful device's awake seconds (wall)
        times the pace, at least 10 simulated minutes."""
        assert self.clock is not None
        return max(600.0, 3.0 * (self.clock.factor or 1.0)) if self.street and self.street.devices else 600.0


def _hhmm(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M")


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
