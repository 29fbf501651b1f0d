"""Simulated time: stepped (as fast as the CPU goes) or paced against the wall clock by a factor.

The world never reads the wall clock. Models take the simulated instant as an argument, and the
`Scheduler` runs callbacks in (simulated time, order of scheduling) order and hands each its scheduled
instant, never "now". So a run is the same whether it is stepped, paced at 1x, or paced at 1440x (a day
in a minute) on a loaded machine: pacing only decides when, in wall time, each step happens. A paced
scheduler that falls behind runs the late steps back to back (with their own simulated instants) and
records the worst lag in `max_lag_s`.

The pending queue is bounded (`max_pending`): scheduling beyond it raises `OverflowError`, because a
simulation that schedules without bound is a bug to see, not a backlog to absorb.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Any, Callable

DEFAULT_MAX_PENDING = 1_000_000


class SimClock:
    """Simulated unix time. `factor=None`: stepped (moves only by `advance_to`); else paced."""

    def __init__(self, start: float, factor: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if factor is not None and factor <= 0:
            raise ValueError("factor must be > 0 (or None for a stepped clock)")
        self.start = float(start)
        self.factor = factor
        self._monotonic = monotonic
        self._wall0 = monotonic()
        self._now = float(start)

    @property
    def paced(self) -> bool:
        return self.factor is not None

    def now(self) -> float:
        """The simulated instant now (stepped: the last one advanced to)."""
        if self.factor is None:
            return self._now
        return self.start + (self._monotonic() - self._wall0) * self.factor

    def advance_to(self, t: float) -> None:
        """Stepped clocks only: move to t (never backwards)."""
        if self.factor is not None:
            raise RuntimeError("a paced clock follows the wall clock; it cannot be advanced")
        if t < self._now:
            raise ValueError(f"time cannot go backwards ({t} < {self._now})")
        self._now = t

    def wall_delay(self, t: float) -> float:
        """Wall seconds until simulated instant t (0 if it has passed, always 0 when stepped)."""
        if self.factor is None:
            return 0.0
        d = (t - self.now()) / self.factor
        return d if d > 0.0 else 0.0


class Scheduler:
    """A deterministic discrete-event loop: `call_at(t, fn, *args)` runs `fn(t, *args)` at simulated t."""

    def __init__(self, clock: SimClock, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.clock = clock
        self.max_pending = max_pending
        self.max_lag_s = 0.0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._queue)

    def call_at(self, t: float, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule fn(t, *args). Ties run in the order they were scheduled."""
        if len(self._queue) >= self.max_pending:
            raise OverflowError(f"scheduler full ({self.max_pending} pending calls)")
        heapq.heappush(self._queue, (t, self._seq, fn, args))
        self._seq += 1

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def _pop_run(self) -> None:
        t, _, fn, args = heapq.heappop(self._queue)
        fn(t, *args)

    def run_until(self, end: float) -> int:
        """Stepped: run every call due at or before `end` at once, advancing the clock; returns the count."""
        if self.clock.paced:
            raise RuntimeError("use run_paced() with a paced clock")
        n = 0
        while self._queue and self._queue[0][0] <= end:
            self.clock.advance_to(max(self.clock.now(), self._queue[0][0]))
            self._pop_run()
            n += 1
        self.clock.advance_to(max(self.clock.now(), end))
        return n

    async def run_paced(self, end: float) -> int:
        """Paced: run the same calls in the same order, each when the wall clock reaches its instant."""
        if self.clock.factor is None:
            raise RuntimeError("run_paced() needs a paced clock")
        factor = self.clock.factor
        n = 0
        while self._queue and self._queue[0][0] <= end:
            t = self._queue[0][0]
            delay = self.clock.wall_delay(t)
            if delay > 0.0:
                await asyncio.sleep(delay)
                continue  # re-check: something may have been scheduled earlier meanwhile
            lag = (self.clock.now() - t) / factor
            if lag > self.max_lag_s:
                self.max_lag_s = lag
            self._pop_run()
            n += 1
        delay = self.clock.wall_delay(end)
        if delay > 0.0:
            await asyncio.sleep(delay)
        return n
