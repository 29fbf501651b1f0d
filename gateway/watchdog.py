"""The systemd watchdog: `WATCHDOG=1` only while every stage of the gateway makes progress.

A process that is alive is not necessarily working: a batcher stuck on a hung write, or a serial
reader whose task died, leave the event loop spinning happily. So the ping is earned, not automatic.
The service's liveness hook (`Gateway.liveness()`) says, per stage, how many seconds ago it last got
through a round of work or, idle, a round of waiting; every half watchdog interval this module reads it
and pings only if no stage is older than `stall_after_s` (by default the watchdog interval itself).
The pinger is a task on the event loop, so a blocked loop stops the pings too.

A stalled stage is named in a log line and in `STATUS=` (which `systemctl status` shows); systemd then
kills the gateway at `WatchdogSec` after the last ping and `Restart=on-failure` starts it again. A stage
that recovers before that earns the pings back.

Every round also sends `STATUS=` with what `status()` says (backlog, link states), so the supervisor's
view is at most one round old.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.logging import fields
from gateway.sdnotify import Notifier, watchdog_interval

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger("gateway.watchdog")

# How often STATUS= is refreshed when systemd set no watchdog (there is no ping cadence to follow).
STATUS_EVERY_S = 5.0
# A stage may stay still this long when there is no watchdog interval to derive the bound from.
DEFAULT_STALL_AFTER_S = 60.0

# stage name -> seconds since it last made progress
Liveness = Callable[[], Mapping[str, float]]


@dataclass(frozen=True)
class Stall:
    stage: str
    idle_s: float


def describe(gateway: Gateway) -> str:
    """The gateway's state in one `STATUS=` line, e.g.

        health=ok backlog=120 mqtt=up serial=3/4 sinks=platform:ok,file:retrying

    `backlog`: reports in the spool that some sink has not taken yet; `mqtt`: up or down (absent when
    MQTT ingest is off); `serial`: open ports of the configured ones; a sink is `retrying` while its
    current batch fails; `health=degraded(N)` counts the reasons `/healthz` gives.
    """
    problems = len(gateway.health().reasons)
    parts = [f"health=degraded({problems})" if problems else "health=ok",
             f"backlog={gateway.spool.stats().reports}"]
    if gateway.mqtt is not None:
        parts.append(f"mqtt={'up' if gateway.mqtt.connected else 'down'}")
    if gateway.serial is not None:
        ports = gateway.serial.ports.values()
        parts.append(f"serial={sum(port.is_open for port in ports)}/{len(ports)}")
    sinks = ",".join(f"{r.name}:{'retrying' if r.stats.failing_since is not None else 'ok'}"
                     for r in gateway.upstream.runners)
    if sinks:
        parts.append(f"sinks={sinks}")
    return " ".join(parts)


class Watchdog:
    """Pings systemd's watchdog while every stage makes progress, and keeps `STATUS=` current."""

    def __init__(self, notifier: Notifier, liveness: Liveness, status: Callable[[], str], *,
                 interval_s: float | None, stall_after_s: float | None = None) -> None:
        self.notifier = notifier
        self.liveness = liveness
        self.status = status
        self.interval_s = interval_s
        self.stall_after_s = stall_after_s or interval_s or DEFAULT_STALL_AFTER_S
        # systemd's advice: ping at half the timeout, so one late round is not yet fatal
        self.period_s = interval_s / 2 if interval_s else STATUS_EVERY_S
        self.pings = 0
        self._stalled: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_environment(cls, liveness: Liveness, status: Callable[[], str], *,
                         stall_after_s: float | None = None, environ: Mapping[str, str] | None = None) -> Watchdog:
        """A watchdog on `NOTIFY_SOCKET` with systemd's `WATCHDOG_USEC` (either may be absent)."""
        return cls(Notifier.from_environment(environ), liveness, status,
                   interval_s=watchdog_interval(environ), stall_after_s=stall_after_s)

    def stalls(self) -> list[Stall]:
        """The stages whose last progress is older than `stall_after_s`, most idle first."""
        found = [Stall(stage, age) for stage, age in self.liveness().items() if age > self.stall_after_s]
        return sorted(found, key=lambda s: -s.idle_s)

    def tick(self) -> bool:
        """One round: STATUS=, plus WATCHDOG=1 when no stage is stalled. True when it pinged."""
        stalls = self.stalls()
        self._log_changes(stalls)
        status = self.status()
        if stalls:
            named = ", ".join(f"{s.stage} {s.idle_s:.0f} s" for s in stalls)
            self.notifier.status(f"stalled: {named}; {status}")
            return False
        if self.interval_s is None:
            self.notifier.status(status)
            return False
        self.notifier.watchdog(status)
        self.pings += 1
        return True

    def _log_changes(self, stalls: list[Stall]) -> None:
        stalled = frozenset(s.stage for s in stalls)
        for s in stalls:
            if s.stage not in self._stalled:
                log.error("stage made no progress; watchdog pings stop, so systemd restarts the gateway",
                          extra=fields(stage=s.stage, idle_s=round(s.idle_s, 1), watchdog_s=self.interval_s))
        for stage in sorted(self._stalled - stalled):
            log.warning("stage moving again; watchdog pings resume", extra=fields(stage=stage))
        self._stalled = stalled

    def ready(self) -> None:
        """READY=1 (the spool is open and ingest runs), then a round every `period_s` until `stopping`."""
        self.notifier.ready(self.status())
        if self.notifier.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="watchdog")

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.period_s)

    def stopping(self) -> None:
        """STOPPING=1 and no more pings: the shutdown runs under TimeoutStopSec, not the watchdog."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.notifier.stopping(f"stopping: {self.status()}")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.notifier.close()
