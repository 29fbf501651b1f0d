"""Faults: sensor faults and the link/power fault schedule appear at the configured rates, compose, are
seeded, and are written to the ground truth."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from simulator.scenario import parse_scenario
from simulator.world import BusError, LinkEvent, NoEcho, SensorError, TruthLog, World, read_truth
from simulator.world.sensors import Noise, Sensor, Spikes, Stuck, Timeouts

START = 1_782_086_400.0  # 2026-06-22T00:00:00Z


def within(count: int, expected: float, sigmas: float = 5.0) -> bool:
    """A Poisson/binomial count within `sigmas` standard deviations of its expectation."""
    return abs(count - expected) <= sigmas * math.sqrt(expected) + 1


def world(faults: str, bins: int = 1, lights: int = 0, link: str = "serial", truth: TruthLog | None = None,
          rest: str = "") -> World:
    return World(parse_scenario(f"""
[scenario]
seed = 99
start = 2026-06-22T00:00:00Z
duration = "30d"
link = "{link}"

[[site]]
name = "street"
lat = 51.5
lon = -0.12
bins = {bins}
lights = {lights}

[faults]
{faults}

{rest}
"""), truth)


def test_ultrasonic_spikes_and_timeouts_at_their_rates() -> None:
    w = world("ultrasonic_spike = 0.05\nultrasonic_timeout = 0.02")
    dist = w.sensor("bin-0001", "dist")
    n, spikes, timeouts = 20_000, 0, 0
    for i in range(n):
        try:
            v = dist.read(800.0, START + i)
        except NoEcho:
            timeouts += 1
            continue
        if v != 800.0:
            spikes += 1
            assert 30.0 <= v <= 400.0  # a spurious echo from close by
    assert within(spikes, n * 0.05)
    assert within(timeouts, n * (1 - 0.05) * 0.02 + n * 0.05 * 0.02)


def test_i2c_errors_raise_and_noise_is_zero_mean() -> None:
    w = world("i2c_error = 0.01\ntemp_noise_c = 0.5\nadc_noise_mv = 10")
    temp, batt = w.sensor("bin-0001", "temp"), w.sensor("bin-0001", "batt")
    errors, readings = 0, []
    for i in range(20_000):
        try:
            readings.append(temp.read(20.0, START + i))
        except BusError as exc:
            assert isinstance(exc, SensorError) and exc.fault == "i2c_error"
            errors += 1
    assert within(errors, 200)
    mean = sum(readings) / len(readings)
    sd = math.sqrt(sum((x - mean) ** 2 for x in readings) / len(readings))
    assert mean == pytest.approx(20.0, abs=0.02) and sd == pytest.approx(0.5, rel=0.05)
    volts = [batt.read(3700.0, START + i) for i in range(5000)]
    assert sum(volts) / len(volts) == pytest.approx(3700.0, abs=1.0)
    assert max(volts) - min(volts) > 40  # 10 mV sigma: the spread of 5000 readings is several sigma wide


def test_a_wet_sensor_sticks_for_windows_at_the_configured_rate() -> None:
    stuck = Stuck(random.Random(1), per_day=2.0, mean_s=3600.0, start=START)
    step = 300.0
    n = int(200 * 86400 / step)
    held = 0
    for i in range(n):
        t = START + i * step
        v = stuck.apply(float(i), t)  # the true value changes every read
        if v != float(i):
            held += 1
            assert stuck.stuck_at(t)
    # a window every 12 h on average, then 1 h stuck: stuck 1/13 of the time
    assert held / n == pytest.approx(1 / 13, rel=0.3)


def test_faults_compose_in_order() -> None:
    r = random.Random(3)
    always_spike = Spikes(r, 1.0, 100.0, 100.0)
    sensor = Sensor("bin-0001", "dist", [always_spike, Noise(r, 1.0)])
    values = [sensor.read(800.0, START + i) for i in range(1000)]
    assert all(80 < v < 120 for v in values)  # the spike, then noise on top of it
    assert len(set(values)) > 900
    never_echo = Sensor("bin-0001", "dist", [Timeouts(r, 1.0), always_spike])
    with pytest.raises(NoEcho):
        never_echo.read(800.0, START)
    assert Sensor("bin-0001", "dist", []).read(800.0, START) == 800.0


def test_sensors_read_clean_with_no_faults_configured() -> None:
    w = world("")
    for q in ("dist", "temp", "batt", "tilt"):
        assert w.sensor("bin-0001", q).faults == ()
    with pytest.raises(KeyError):
        w.sensor("bin-9999", "dist")


def test_link_fault_schedule_rates_per_device() -> None:
    w = world(
        "garbage_per_hour = 0.5\ndrop_per_hour = 0.25\nunplug_per_day = 2\nunplug_mean_s = 60\n"
        "power_cut_per_day = 1\nbrownout_per_day = 0.5",
        bins=100,
    )
    days = 10
    end = START + days * 86400
    counts: dict[str, int] = {}
    for d in w.scenario.devices:
        stream = w.faults.device(d.id)
        last = START
        for e in stream.pop_due(end):
            assert e.t >= last and e.device == d.id
            last = e.t
            counts[e.kind] = counts.get(e.kind, 0) + 1
            if e.kind == "garbage":
                assert 1 <= len(e.data) <= 64
            if e.kind == "drop_bytes":
                assert 1 <= e.count <= 16
            if e.kind in ("unplug", "power_cut"):
                assert e.duration_s > 0
        assert stream.peek() > end
    hours = 100 * days * 24
    assert within(counts["garbage"], hours * 0.5)
    assert within(counts["drop_bytes"], hours * 0.25)
    assert within(counts["unplug"], 100 * days * 2)
    assert within(counts["power_cut"], 100 * days * 1)
    assert within(counts["brownout"], 100 * days * 0.5)
    assert "net_cut" not in counts  # serial devices have no network to cut


def test_mqtt_devices_get_network_cuts_and_the_broker_restarts() -> None:
    w = world("net_cut_per_day = 3\nnet_cut_mean_s = 120\nbroker_restart_per_day = 4\ngarbage_per_hour = 9",
              bins=50, link="mqtt")
    end = START + 20 * 86400
    kinds = [e.kind for d in w.scenario.devices for e in w.faults.device(d.id).pop_due(end)]
    assert set(kinds) == {"net_cut"}
    assert within(len(kinds), 50 * 20 * 3)
    restarts = w.faults.broker().pop_due(end)
    assert within(len(restarts), 20 * 4)
    assert all(e.device is None and e.kind == "broker_restart" for e in restarts)
    for a, b in zip(restarts, restarts[1:]):
        assert b.t >= a.t + a.duration_s  # the broker is not restarted while it is down


def test_the_schedule_is_seeded_and_independent_of_how_it_is_consumed() -> None:
    def schedule(chunks: int) -> list[LinkEvent]:
        w = world("garbage_per_hour = 2\nunplug_per_day = 5\npower_cut_per_day = 2", bins=3)
        stream = w.faults.device("bin-0002")
        out = []
        for i in range(1, chunks + 1):
            out += stream.pop_due(START + 5 * 86400 * i / chunks)
        return out

    assert schedule(1) == schedule(1000)
    assert len(schedule(1)) > 20


def test_scripted_link_events_join_the_streams() -> None:
    w = world("", bins=2, rest='[[event]]\nkind = "unplug"\ndevice = "bin-0002"\nafter = "3h"\nduration = "5m"\n'
                               '[[event]]\nkind = "broker_restart"\nafter = "1h"')
    assert w.faults.device("bin-0001").pop_due(START + 86400) == []
    (unplug,) = w.faults.device("bin-0002").pop_due(START + 86400)
    assert (unplug.t, unplug.kind, unplug.duration_s) == (START + 3 * 3600, "unplug", 300.0)
    (restart,) = w.faults.broker().pop_due(START + 86400)
    assert restart.t == START + 3600 and restart.duration_s == 600.0


def test_injected_sensor_faults_are_in_the_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    with TruthLog(path) as truth:
        w = world("ultrasonic_spike = 0.1\nultrasonic_timeout = 0.1\ntemp_noise_c = 1", truth=truth)
        dist, temp = w.sensor("bin-0001", "dist"), w.sensor("bin-0001", "temp")
        outcomes = []
        for i in range(500):
            temp.read(20.0, START + i)
            try:
                outcomes.append("spike" if dist.read(800.0, START + i) != 800.0 else None)
            except NoEcho:
                outcomes.append("no_echo")
    logged: dict[float, list[str]] = {}
    for r in read_truth(path):
        if r.quantity == "fault.dist":
            logged.setdefault(r.t, []).append(r.value)
    for i, outcome in enumerate(outcomes):
        faults = logged.get(START + i, [])
        if outcome == "no_echo":  # a spike may come first: then both are in the log, in order
            assert faults in (["no_echo"], ["spike", "no_echo"])
        else:
            assert faults == ([outcome] if outcome else [])
    assert sum(1 for o in outcomes if o) > 50
    assert not any(r.quantity == "fault.temp" for r in read_truth(path))  # noise is not an event
