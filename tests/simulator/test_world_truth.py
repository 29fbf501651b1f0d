"""The ground truth: a seeded scenario gives the same truth every time, stepped or paced, a different seed
a different one; the log is bounded and readable."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from simulator.scenario import Scenario, builtin_scenario
from simulator.world import Scheduler, SensorError, SimClock, TruthLog, World, read_truth
from simulator.world.truth import UNITS

HOURS = 6


def street(world: World, scheduler: Scheduler) -> None:
    """Schedule what a fleet of simple devices would do: wake at its interval, read every sensor, switch
    lamps on below 30 lx, send a report; and note the link events the link layer would apply."""
    sc = world.scenario
    truth = world.truth
    assert truth is not None

    def bin_wake(t: float, dev: str) -> None:
        s = world.bin(dev).sample(t)
        for q, v in (("dist", s.dist_mm), ("temp", s.temp_c), ("batt", s.batt_mv)):
            try:
                world.sensor(dev, q).read(v, t)
            except SensorError:
                pass
        world.bin(dev).reported(t)
        for e in world.faults.device(dev).pop_due(t):
            truth.record(e.t, dev, "link", [e.kind, e.duration_s, e.data.hex(), e.count])
        scheduler.call_at(t + sc.bins.interval_s, bin_wake, dev)

    def light_wake(t: float, dev: str) -> None:
        lamp = world.light(dev)
        s = lamp.sample(t)
        try:
            lux = world.sensor(dev, "lux").read(s.lux, t)
            lamp.set_output(t, on=lux < 30.0, dim=1.0 if lux < 5.0 else 0.6)
        except SensorError:
            pass
        scheduler.call_at(t + sc.lights.interval_s, light_wake, dev)

    for i, d in enumerate(sc.devices):
        first = sc.start + 7.0 * i  # devices do not all wake in the same second
        scheduler.call_at(first, bin_wake if d.kind == "bin" else light_wake, d.id)


def run_stepped(scenario: Scenario, path: Path) -> None:
    with TruthLog(path) as truth:
        world = World(scenario, truth)
        scheduler = Scheduler(world.clock())
        street(world, scheduler)
        scheduler.run_until(scenario.start + HOURS * 3600)


def run_paced(scenario: Scenario, path: Path, factor: float) -> None:
    with TruthLog(path) as truth:
        world = World(scenario, truth)
        scheduler = Scheduler(SimClock(scenario.start, factor))
        street(world, scheduler)
        asyncio.run(scheduler.run_paced(scenario.start + HOURS * 3600))


@pytest.fixture(scope="module")
def demo() -> Scenario:
    sc = builtin_scenario("demo")
    # all the demo's scripted events inside the window, so they are part of what is compared
    events = tuple(dataclasses.replace(e, at=sc.start + (i + 1) * 3000.0) for i, e in enumerate(sc.events))
    return dataclasses.replace(sc, events=events)


def test_same_seed_same_truth(tmp_path: Path, demo: Scenario) -> None:
    run_stepped(demo, tmp_path / "a.jsonl")
    run_stepped(demo, tmp_path / "b.jsonl")
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes()
    records = list(read_truth(tmp_path / "a.jsonl"))
    quantities = {r.quantity for r in records}
    assert {"fill", "dist", "temp", "batt", "tilt", "lid", "lux", "lamp", "power", "curr", "energy"} <= quantities
    assert {"fire", "lamp_fail"} <= {r.value for r in records if r.quantity == "event"}
    assert any(r.quantity.startswith("fault.") for r in records)
    assert any(r.quantity == "link" and r.value[0] == "unplug" for r in records)


def test_different_seed_different_truth(tmp_path: Path, demo: Scenario) -> None:
    run_stepped(demo, tmp_path / "a.jsonl")
    run_stepped(dataclasses.replace(demo, seed=demo.seed + 1), tmp_path / "b.jsonl")
    a = [r for r in read_truth(tmp_path / "a.jsonl") if r.quantity == "fill"]
    b = [r for r in read_truth(tmp_path / "b.jsonl") if r.quantity == "fill"]
    assert [r.t for r in a] == [r.t for r in b]  # same devices, same wakes...
    assert [r.value for r in a] != [r.value for r in b]  # ...different street


def test_paced_run_gives_the_stepped_truth(tmp_path: Path, demo: Scenario) -> None:
    run_stepped(demo, tmp_path / "stepped.jsonl")
    run_paced(demo, tmp_path / "paced.jsonl", factor=2e6)  # 6 simulated hours in about 11 ms of wall time
    assert (tmp_path / "paced.jsonl").read_bytes() == (tmp_path / "stepped.jsonl").read_bytes()


def test_each_device_s_lines_are_in_time_order_with_known_units(tmp_path: Path, demo: Scenario) -> None:
    run_stepped(demo, tmp_path / "a.jsonl")
    last: dict[str, float] = {}
    for r in read_truth(tmp_path / "a.jsonl"):
        if r.quantity in ("fill", "lux"):
            assert r.device is not None
            assert r.t >= last.get(r.device, 0.0)
            last[r.device] = r.t
        assert r.quantity in UNITS or r.quantity.startswith("fault.") or r.quantity == "link"


def test_flushed_lines_can_be_read_while_the_log_is_open(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with TruthLog(path) as truth:
        truth.record(12.5, "bin-0001", "fill", 0.25)
        truth.record(13.0, None, "event", "broker_restart")
        truth.flush()
        assert [(r.t, r.device, r.quantity, r.value) for r in read_truth(path)] == [
            (12.5, "bin-0001", "fill", 0.25), (13.0, None, "event", "broker_restart")]


def test_the_log_is_bounded_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    with TruthLog(path, max_bytes=1000) as truth:
        for i in range(100):
            truth.record(1.0 * i, "bin-0001", "fill", 0.5)
        assert truth.bytes_written <= 1000 and truth.dropped == 100 - truth.lines
    records = list(read_truth(path))
    assert records[-1].quantity == "truncated" and records[-1].value == 100 - (len(records) - 1)
    assert path.stat().st_size < 1100
