"""Streetlights: electrics of a dimmable LED driver, energy, ageing, flicker, failure, and the light they see."""

from __future__ import annotations

import datetime as dt
import statistics

import pytest

from simulator.scenario import parse_scenario
from simulator.world import World
from simulator.world.lamps import driver_input

START = dt.datetime(2026, 6, 22, 0, 0, tzinfo=dt.timezone.utc)


def world(lights: str = "", rest: str = "", n: int = 1, site: str = "") -> World:
    return World(parse_scenario(f"""
[scenario]
seed = 5
start = 2026-06-22T00:00:00Z
duration = "7d"

[[site]]
name = "street"
lat = 51.5
lon = -0.12
lights = {n}
{site}

[lights]
{lights}

{rest}
"""))


def test_driver_power_and_power_factor_fall_with_dimming() -> None:
    full, pf_full = driver_input(60.0, 0.5, True, 1.0)
    assert full == pytest.approx(60.5)
    assert pf_full == pytest.approx(0.97)
    levels = [driver_input(60.0, 0.5, True, d / 10) for d in range(1, 11)]
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(levels, levels[1:]))
    assert driver_input(60.0, 0.5, True, 0.0) == driver_input(60.0, 0.5, True, 0.1)  # the driver's floor
    assert driver_input(60.0, 0.5, False, 1.0) == (0.5, 0.5)


def test_energy_is_power_integrated_over_time() -> None:
    lamp = world().light("lamp-0001")
    t0 = START.timestamp()
    lamp.set_output(t0, on=True, dim=1.0)
    lamp.set_output(t0 + 3600, on=True, dim=0.5)
    s = lamp.sample(t0 + 7200)
    p_half = driver_input(60.0, 0.5, True, 0.5)[0]
    assert s.energy_wh == pytest.approx(60.5 + p_half)
    lamp.set_output(t0 + 7200, on=False)
    assert lamp.sample(t0 + 10800).energy_wh == pytest.approx(60.5 + p_half + 0.5)


def test_current_follows_power_voltage_and_power_factor() -> None:
    lamp = world().light("lamp-0001")
    t0 = START.timestamp()
    lamp.set_output(t0, on=True, dim=1.0)
    for m in range(0, 600, 7):
        s = lamp.sample(t0 + m * 60.0)
        assert 230 * 0.96 <= s.volt_v <= 230 * 1.02
        assert s.curr_ma == pytest.approx(s.power_w / (s.volt_v * 0.97) * 1000)


def test_a_failed_lamp_reads_almost_no_current_while_on() -> None:
    w = world(rest='[[event]]\nkind = "lamp_fail"\ndevice = "lamp-0001"\nafter = "2h"')
    lamp = w.light("lamp-0001")
    t0 = START.timestamp()
    lamp.set_output(t0, on=True, dim=1.0)
    before = lamp.sample(t0 + 3600)
    after = lamp.sample(t0 + 3 * 3600)
    assert not before.failed and before.curr_ma > 200 and before.lumens > 1000
    assert after.on and after.failed
    assert after.curr_ma < 10 and after.power_w == pytest.approx(0.5) and after.lumens == 0
    # energy: two hours at full power, then the controller's standby
    assert after.energy_wh == pytest.approx(2 * 60.5 + 0.5, rel=1e-6)


def test_lumen_output_depreciates_with_operating_hours() -> None:
    lamp = world(lights="age_max_h = 0").light("lamp-0001")
    t0 = START.timestamp()
    lamp.set_output(t0, on=True)
    new = lamp.sample(t0).lumens
    assert new == pytest.approx(8000.0)
    lamp.age_h = 50_000.0  # the rated L70 life
    assert lamp.sample(t0 + 1).lumens == pytest.approx(0.7 * 8000.0, rel=1e-3)


def test_failure_probability_rises_with_age() -> None:
    # Weibull with shape 3: an old lamp has much less life left than a young one.
    w = world(n=3000, lights="age_max_h = 80000")
    lamps = [w.light(d.id) for d in w.scenario.devices]
    young = [lp.fail_age_h - lp.age_h for lp in lamps if lp.age_h < 10_000]
    old = [lp.fail_age_h - lp.age_h for lp in lamps if lp.age_h > 60_000]
    assert len(young) > 200 and len(old) > 200
    assert statistics.mean(old) < 0.6 * statistics.mean(young)
    assert all(lp.fail_age_h > lp.age_h for lp in lamps)


def test_a_lamp_flickers_before_it_wears_out_and_then_fails() -> None:
    lamp = world(lights="flicker_h = 100").light("lamp-0001")
    t0 = START.timestamp()
    lamp.age_h = lamp.fail_age_h - 60.0  # 60 h of life left: 40 % of the way into the flicker window
    lamp.set_output(t0, on=True)
    samples = [lamp.sample(t0 + m * 60.0) for m in range(0, 600)]  # 10 h
    rate = sum(s.flicker for s in samples) / len(samples)
    assert 0.3 < rate < 0.65  # the flicker probability climbs from 40 % to 50 % over these 10 h
    assert all(s.power_w < 60.5 for s in samples if s.flicker)
    end = lamp.sample(t0 + 61 * 3600.0)
    assert end.failed and not any(s.failed for s in samples)


def test_the_light_sensor_sees_daylight_and_neighbours_spill_at_night() -> None:
    lamp = world(site="spill_lux = 4\ncloud_mean = 0.2").light("lamp-0001")
    t0 = START.timestamp()
    midnight = lamp.sample(t0 + 3600).lux  # 01:00 UTC, sun well down
    noon = lamp.sample(t0 + 12 * 3600).lux
    assert 2.0 <= midnight <= 6.1  # a few lux from the neighbours (spill 4 lx +/- 50 %)
    assert noon > 10_000
