"""Step 5 of the pipeline: per-device state, offline alarms, and commands delivered over the device's link.

State per device (GET /devices): last seen, the newest report's (boot, seq) and time, its values, the
alarms open (the `alarm` records of the newest report, plus `offline`), the link and port or topic it
reports over, its MQTT `state` (online/offline), its open commands. "Newest" is by (boot, seq), so a
backlog arriving late never overwrites fresher values.

Offline: a device silent for more than `offline_after` of its intervals (the registry's `interval_s`,
else `devices.interval_s`) gets an `offline` alarm, once per silence: a report the gateway makes
itself (boot 0, stored through the spool like any other, so every sink gets it). The device's next
report closes it. A device is watched from its first report; `devices.json` in the state folder
keeps last-seen times (and raised alarms) across restarts, written every `SNAPSHOT_S` and at stop.

Commands (see commands.py for the statuses) go to a device over the link its last report came by,
when that link can reach it: at once for a device whose MQTT state is `online` or whose serial port
is open, else right after its next report (a sleeping bin listens just after it reports).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.config import DevicesSection
from gateway.devices.cids import CidStore
from gateway.devices.commands import CommandBook, CommandEntry, CommandRefused
from gateway.logging import fields
from gateway.registry import Registry
from gateway.spool import Spool, SpoolError
from gateway.timebase import Timebase
from gateway.wire import Reading, Report, seal_command

log = logging.getLogger("gateway.devices")

SNAPSHOT_S = 60.0
OFFLINE = "offline"


class CommandLink(Protocol):
    """What a link offers the tracker for commands (MqttIngest and SerialIngest implement it)."""

    def reachable(self, device: str, source: str) -> bool:
        """Whether a command written now could reach the device behind `source`."""

    async def send_command(self, device: str, source: str, message: bytes) -> None:
        """Write a sealed command to the device; raise on failure."""


@dataclass
class DeviceState:
    id: str
    last_seen: float | None = None  # unix time of the last report's arrival
    link: str | None = None
    source: str | None = None
    boot: int = 0
    seq: int = 0
    time: float | None = None
    time_estimated: bool = False
    readings: tuple[Reading, ...] = ()  # of the newest report
    offline: bool = False
    mqtt_state: str | None = None
    reports: int = 0

    @property
    def alarms(self) -> set[str]:
        return {str(r.value) for r in self.readings if r.name == "alarm"}

    def values(self) -> dict[str, dict[str, Any]]:
        base = self.time or 0.0
        return {r.name: {"value": r.value, "unit": r.unit, "time": base + r.time_offset}
                for r in self.readings if r.name != "alarm"}


class DeviceTracker:
    def __init__(self, registry: Registry, spool: Spool, config: DevicesSection, timebase: Timebase,
                 cids: CidStore, commands: CommandBook, state_path: Path) -> None:
        self.registry = registry
        self.spool = spool
        self.config = config
        self.timebase = timebase
        self.cids = cids
        self.commands = commands
        self.state_path = state_path
        self.links: dict[str, CommandLink] = {}
        self._states: dict[str, DeviceState] = {}
        self._delivering: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.offline_raised = 0
        self.progress_at = time.monotonic()
        self._load_snapshot()

    # --- state --------------------------------------------------------------------------------

    def state(self, device: str) -> DeviceState:
        st = self._states.get(device)
        if st is None:
            st = self._states[device] = DeviceState(device)
        return st

    def observe(self, report: Report, link: str, source: str, time_s: float, estimated: bool, arrival_ns: int) -> None:
        """A report was stored (the Verifier's observer)."""
        st = self.state(report.device)
        arrival = arrival_ns / 1e9
        st.last_seen = arrival if st.last_seen is None else max(st.last_seen, arrival)
        st.link, st.source = link, source
        st.reports += 1
        if report.boot > st.boot or (report.boot == st.boot and report.seq >= st.seq):
            st.boot, st.seq, st.time, st.time_estimated = report.boot, report.seq, time_s, estimated
            st.readings = report.readings  # turned into values and alarms only when someone asks
        if st.offline:
            st.offline = False
            log.info("device reporting again", extra=fields(device=report.device, link=link))
        if self.commands.has_any(report.device):
            self.commands.observe(report, arrival, self.timebase.is_sane(report.time, arrival))
            if self.commands.has_open(report.device):
                self._schedule_delivery(report.device, resend=True)

    def last_sources(self, link: str) -> dict[str, str]:
        """{source: device} of the devices last seen on `link` (e.g. which device is behind a port)."""
        return {st.source: st.id for st in self._states.values() if st.link == link and st.source}

    def on_state(self, device: str, state: str) -> None:
        """The device's retained MQTT `state` (online/offline)."""
        if device not in self.registry:
            return
        st = self.state(device)
        st.mqtt_state = state
        if state == "online" and self.commands.has_open(device):
            self._schedule_delivery(device)

    def public(self, device: str) -> dict[str, Any] | None:
        entry = self.registry.get(device)
        st = self._states.get(device)
        if entry is None and st is None:
            return None
        st = st or DeviceState(device)
        link_state = None
        if st.link is not None and st.source is not None and st.link in self.links:
            link_state = self.links[st.link].reachable(device, st.source)
        return {
            **(entry.public() if entry is not None else {"id": device, "registered": False}),
            "last_seen": st.last_seen, "link": st.link, "source": st.source, "link_up": link_state,
            "mqtt_state": st.mqtt_state, "boot": st.boot or None, "seq": st.seq or None, "time": st.time,
            "time_estimated": st.time_estimated, "values": st.values(),
            "alarms": sorted(st.alarms | ({OFFLINE} if st.offline else set())), "reports": st.reports,
            "commands_open": len(self.commands.open(device)),
        }

    def devices(self) -> list[dict[str, Any]]:
        ids = sorted(set(self.registry.devices) | set(self._states))
        return [d for d in (self.public(i) for i in ids) if d is not None]

    # --- offline alarms -----------------------------------------------------------------------

    def interval(self, device: str) -> float:
        entry = self.registry.get(device)
        return entry.interval_s if entry is not None and entry.interval_s else self.config.interval_s

    async def check(self, now: float | None = None) -> list[str]:
        """Raise `offline` for every device silent too long; returns the devices raised now."""
        now = time.time() if now is None else now
        raised = []
        for st in list(self._states.values()):
            if st.offline or st.last_seen is None or st.id not in self.registry:
                continue
            silent = now - st.last_seen
            if silent <= self.config.offline_after * self.interval(st.id):
                continue
            try:
                seq = await self.spool.submit_local(st.id, [Reading("alarm", OFFLINE, None)], now)
            except SpoolError as exc:
                log.error("offline alarm not stored, will retry", extra=fields(device=st.id, error=str(exc)))
                continue
            st.offline = True
            self.offline_raised += 1
            raised.append(st.id)
            log.warning("device offline", extra=fields(device=st.id, silent_s=round(silent), seq=seq,
                                                       interval_s=self.interval(st.id)))
        for entry in self.commands.expire(now):
            log.warning("command expired", extra=fields(device=entry.device, op=entry.op, id=entry.id))
        return raised

    async def run(self) -> None:
        """The periodic duties: offline checks, command expiry, snapshots."""
        last_snapshot = time.monotonic()
        while True:
            self.progress_at = time.monotonic()
            await self.check()
            if time.monotonic() - last_snapshot >= SNAPSHOT_S:
                self.save_snapshot()
                last_snapshot = time.monotonic()
            end = time.monotonic() + self.config.check_every_s
            while (left := end - time.monotonic()) > 0:  # stamp progress at least every second
                await asyncio.sleep(min(left, 1.0))
                self.progress_at = time.monotonic()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="devices")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.save_snapshot()

    # --- snapshot -----------------------------------------------------------------------------

    def save_snapshot(self) -> None:
        data = {st.id: {"last_seen": st.last_seen, "offline": st.offline, "link": st.link, "source": st.source}
                for st in self._states.values() if st.last_seen is not None}
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_name(self.state_path.name + ".tmp")
            tmp.write_text(json.dumps(data, separators=(",", ":")), "utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.error("device snapshot not written", extra=fields(path=str(self.state_path), error=str(exc)))

    def _load_snapshot(self) -> None:
        try:
            data = json.loads(self.state_path.read_text("utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("device snapshot unreadable, starting without it",
                      extra=fields(path=str(self.state_path), error=str(exc)))
            return
        for device, saved in data.items() if isinstance(data, dict) else ():
            if isinstance(saved, dict) and isinstance(saved.get("last_seen"), (int, float)):
                st = self.state(device)
                st.last_seen = float(saved["last_seen"])
                st.offline = bool(saved.get("offline"))
                st.link, st.source = saved.get("link"), saved.get("source")

    # --- commands -----------------------------------------------------------------------------

    def submit_command(self, device: str, op: str, args: dict[str, Any] | None) -> CommandEntry:
        """Queue a command for a registered device and send it now if its link can reach it."""
        if device not in self.registry:
            raise CommandRefused(f"{device} is not registered")
        entry = self.commands.submit(device, op, args)
        log.info("command queued", extra=fields(device=device, op=op, id=entry.id))
        if self._reachable(device):
            self._schedule_delivery(device)
        return entry

    def _route(self, device: str) -> tuple[CommandLink, str, str] | None:
        st = self._states.get(device)
        if st is not None and st.link in self.links and st.source is not None:
            return self.links[st.link], st.link, st.source
        if "mqtt" in self.links:
            return self.links["mqtt"], "mqtt", ""
        return None

    def _reachable(self, device: str) -> bool:
        route = self._route(device)
        if route is None:
            return False
        link, name, source = route
        if name == "mqtt" and self.state(device).mqtt_state != "online":
            return False
        return link.reachable(device, source)

    def _schedule_delivery(self, device: str, resend: bool = False) -> None:
        """Write the device's due commands; `resend` (after a report) includes sent ones without effect."""
        if device in self._delivering:
            return
        self._delivering.add(device)
        task = asyncio.get_running_loop().create_task(self._deliver(device, resend))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, device: str, resend: bool) -> None:
        try:
            route = self._route(device)
            entry_key = self.registry.get(device)
            if route is None or entry_key is None:
                return
            link, name, source = route
            for entry in self.commands.due(device, resend):
                if entry.message is None or entry.op == "time":  # a resent `time` carries the clock of now
                    entry.message = seal_command(device, entry_key.key.bytes,
                                                 self.commands.to_wire(entry, self.cids.next(device)))
                try:
                    await link.send_command(device, source, entry.message)
                except Exception as exc:  # noqa: BLE001 - a link failure leaves the command open
                    log.warning("command not sent, will retry", extra=fields(
                        device=device, op=entry.op, id=entry.id, link=name, error=str(exc) or type(exc).__name__))
                    return
                self.commands.sent(entry, entry.message, name, self.state(device).boot or None)
                log.info("command sent", extra=fields(device=device, op=entry.op, id=entry.id, cid=entry.cid,
                                                      link=name, sends=entry.sends))
        finally:
            self._delivering.discard(device)

    # --- metrics ------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        states = list(self._states.values())
        yield GaugeMetricFamily("kerbline_devices_registered", "Devices in the registry", len(self.registry))
        yield GaugeMetricFamily("kerbline_devices_seen", "Devices that have reported",
                                sum(1 for s in states if s.last_seen is not None))
        yield GaugeMetricFamily("kerbline_devices_offline", "Devices with an open offline alarm",
                                sum(1 for s in states if s.offline))
        yield GaugeMetricFamily("kerbline_devices_alarms", "Devices with a device alarm open",
                                sum(1 for s in states if s.alarms))
        yield CounterMetricFamily("kerbline_offline_alarms", "Offline alarms raised", self.offline_raised)
        finished = CounterMetricFamily("kerbline_commands_finished", "Commands by op and final status",
                                       labels=["op", "status"])
        for key, value in self.commands.finished.items():
            op, status = key.split("/")
            finished.add_metric([op, status], value)
        yield finished

