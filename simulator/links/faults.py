"""Playing the world's link and power faults on real links, at their simulated instants.

The world decides when a fault happens (`World.faults`: one `EventStream` per device and one for the
broker, see simulator/world/links.py); this module waits for each event on the simulation's paced
clock and hands it to the handler for its kind. A handler starts the fault and may return the action
that ends it (plug the cable back, restore the network, power on, start the broker), which runs when
the event's `duration_s` has passed on the same clock. Events of one kind never overlap (the world
guarantees it); different kinds may.

`FaultPlayer.applied` counts the events played by kind; kinds with no handler are counted in `ignored`
(a fault that does not apply to this link, e.g. `net_cut` on a device that is not simulated here).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Callable, Mapping

from simulator.links.broker import Broker
from simulator.world import EventStream, LinkEvent, SimClock

# A handler starts a fault; it returns the action that ends it, or None for an instant fault.
Handler = Callable[[LinkEvent], Callable[[], object] | None]


async def sleep_until(clock: SimClock, t: float) -> None:
    """Wait (on the wall clock) until the paced simulated clock reaches `t`."""
    while True:
        delay = clock.wall_delay(t)
        if delay <= 0.0:
            return
        await asyncio.sleep(delay)


class FaultPlayer:
    """Plays event streams on handlers until `until` (simulated time)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.applied: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self._endings: dict[asyncio.Task[None], Callable[[], object]] = {}
        self.on_event: Callable[[float, str | None, str], None] | None = None  # (t, device, kind), for views

    async def play(self, stream: EventStream, handlers: Mapping[str, Handler], until: float) -> None:
        """Apply each event of `stream` at its instant; returns when the next one is past `until`."""
        while True:
            t = stream.peek()
            if t > until:
                return
            await sleep_until(self.clock, t)
            for event in stream.pop_due(t):
                handler = handlers.get(event.kind)
                if handler is None:
                    self.ignored[event.kind] += 1
                    continue
                self.applied[event.kind] += 1
                if self.on_event is not None:
                    self.on_event(event.t, event.device, event.kind)
                end = handler(event)
                if end is not None:
                    task = asyncio.ensure_future(self._end_at(event.t + event.duration_s, end))
                    self._endings[task] = end
                    task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._endings.pop(task, None)

    async def _end_at(self, t: float, end: Callable[[], object]) -> None:
        await sleep_until(self.clock, t)
        await _call(end)

    async def finish(self) -> None:
        """End every fault still in progress now (cables back in, power on), e.g. at the end of a run."""
        pending = list(self._endings.items())
        self._endings.clear()
        for task, end in pending:
            task.cancel()
            await _call(end)


async def _call(action: Callable[[], object]) -> None:
    result = action()
    if asyncio.iscoroutine(result):
        await result


def broker_handlers(broker: Broker) -> dict[str, Handler]:
    """`broker_restart`: the broker goes down, and comes back (same port, its sessions kept) at the end."""

    def restart(e: LinkEvent) -> Callable[[], object]:
        broker.restart_down()
        return lambda: asyncio.to_thread(broker.start)

    return {"broker_restart": restart}
