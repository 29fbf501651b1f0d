"""Simulated time: stepped and paced clocks, and the deterministic scheduler."""

from __future__ import annotations

import asyncio

import pytest

from simulator.world import Scheduler, SimClock


class FakeWall:
    """A wall clock the test moves by hand, so pacing arithmetic is checked without timing anything."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_paced_clock_maps_wall_seconds_by_the_factor() -> None:
    wall = FakeWall()
    clock = SimClock(1_000_000.0, factor=1440.0, monotonic=wall)
    assert clock.now() == 1_000_000.0
    wall.now += 60.0  # a wall minute...
    assert clock.now() == pytest.approx(1_000_000.0 + 86400.0)  # ...is a simulated day
    assert clock.wall_delay(1_000_000.0 + 86400.0 + 1440.0) == pytest.approx(1.0)
    assert clock.wall_delay(0.0) == 0.0
    with pytest.raises(RuntimeError):
        clock.advance_to(2_000_000.0)


def test_stepped_clock_moves_only_when_told_and_never_back() -> None:
    clock = SimClock(50.0)
    assert not clock.paced and clock.now() == 50.0 and clock.wall_delay(1e9) == 0.0
    clock.advance_to(60.0)
    assert clock.now() == 60.0
    with pytest.raises(ValueError):
        clock.advance_to(59.0)
    with pytest.raises(ValueError):
        SimClock(0.0, factor=0.0)


def test_scheduler_runs_in_time_then_scheduling_order_with_the_scheduled_instant() -> None:
    clock = SimClock(0.0)
    sched = Scheduler(clock)
    ran: list[tuple[float, str, float]] = []

    def note(t: float, name: str) -> None:
        ran.append((t, name, clock.now()))
        if name == "a":
            sched.call_at(t + 5.0, note, "a-again")

    sched.call_at(10.0, note, "b")
    sched.call_at(5.0, note, "a")
    sched.call_at(10.0, note, "c")  # same instant as b: runs after b
    sched.call_at(30.0, note, "late")
    assert sched.run_until(20.0) == 4
    assert ran == [(5.0, "a", 5.0), (10.0, "b", 10.0), (10.0, "c", 10.0), (10.0, "a-again", 10.0)]
    assert clock.now() == 20.0 and len(sched) == 1 and sched.next_time() == 30.0


def test_scheduler_queue_is_bounded() -> None:
    sched = Scheduler(SimClock(0.0), max_pending=3)
    for i in range(3):
        sched.call_at(float(i), lambda t: None)
    with pytest.raises(OverflowError):
        sched.call_at(9.0, lambda t: None)
    sched.run_until(0.0)
    sched.call_at(9.0, lambda t: None)  # room again once one has run


def test_paced_scheduler_runs_the_same_calls_and_records_lag() -> None:
    clock = SimClock(0.0, factor=1e6)
    sched = Scheduler(clock)
    ran: list[float] = []
    for t in (3.0, 1.0, 2.0, 50.0):
        sched.call_at(t, lambda t: ran.append(t))
    assert asyncio.run(sched.run_paced(10.0)) == 3
    assert ran == [1.0, 2.0, 3.0] and sched.max_lag_s >= 0.0
    with pytest.raises(RuntimeError):
        sched.run_until(100.0)
