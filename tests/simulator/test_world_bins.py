"""Bins: they fill by the clock, the truck empties them on schedule, they overflow, burn, tip over, and
their battery drains by night and charges by day."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from simulator.scenario import parse_scenario
from simulator.world import World
from simulator.world.bins import PROFILES

LONDON = ZoneInfo("Europe/London")
START = dt.datetime(2026, 6, 22, 0, 0, tzinfo=dt.timezone.utc)  # a Monday


def world(site: str = "", bins: str = "", rest: str = "", n: int = 1) -> World:
    return World(parse_scenario(f"""
[scenario]
seed = 11
start = {START.isoformat().replace("+00:00", "Z")}
duration = "28d"

[[site]]
name = "street"
lat = 51.5
lon = -0.12
tz = "Europe/London"
bins = {n}
{site}

[bins]
{bins}

{rest}
"""))


def test_profiles_are_weekly_and_normalised() -> None:
    for use, profile in PROFILES.items():
        assert len(profile) == 168, use
        assert sum(profile) / 168 == pytest.approx(1.0)
    res, com, park = PROFILES["residential"], PROFILES["commercial"], PROFILES["park"]
    assert res[8] > res[3]  # Monday 08:00 busier than 03:00
    assert com[12] > com[6 * 24 + 12]  # Monday lunchtime busier than Sunday lunchtime
    assert park[5 * 24 + 14] > park[14]  # Saturday afternoon in the park busier than Monday's


def test_bins_fill_and_are_emptied_on_schedule() -> None:
    w = world(site='collection = { days = ["mon", "thu"], hour = 7.0, window_h = 0 }')
    b = w.bin("bin-0001")
    step = 600.0
    t = START.timestamp()
    end = t + 14 * 86400
    prev = b.sample(t)
    drops = []
    while t < end:
        t += step
        s = b.sample(t)
        if s.fill < prev.fill:
            drops.append((prev.t, t, s.fill))
        else:
            assert s.fill >= prev.fill  # between collections the fill never goes down
        prev = s
    when = [dt.datetime.fromtimestamp(hi, LONDON) for _, hi, _ in drops]
    assert [(d.strftime("%a"), d.hour) for d in when] == [("Mon", 7), ("Thu", 7)] * 2
    for lo, hi, fill in drops:
        collect = dt.datetime.fromtimestamp(hi, LONDON).replace(minute=0, second=0).timestamp()
        assert lo < collect <= hi  # the drop happened across 07:00 local
        assert fill < 0.03 + 0.01  # the truck leaves at most a residue, plus what came since


def test_fill_does_not_depend_on_how_often_the_bin_is_sampled() -> None:
    a = world(bins="tilt_per_day = 2\nlid_per_day = 2").bin("bin-0001")
    b = world(bins="tilt_per_day = 2\nlid_per_day = 2").bin("bin-0001")
    t0 = START.timestamp()
    for minute in range(1, 7 * 24 * 60 + 1):
        t = t0 + minute * 60.0
        sa = a.sample(t)
        if minute % 97 == 0:  # b is sampled at an irregular, much slower cadence
            sb = b.sample(t)
            assert sb.fill == pytest.approx(sa.fill, abs=1e-9)
            assert sb.tilt_deg == sa.tilt_deg and sb.lid_open == sa.lid_open


def test_overflow_saturates_at_full() -> None:
    w = world(site='collection = { days = ["sun"], hour = 7.0 }',
              bins="fill_per_day = { residential = 1.0 }")
    b = w.bin("bin-0001")
    t = START.timestamp()
    samples = [b.sample(t + h * 3600.0) for h in range(0, 5 * 24)]
    full = [s for s in samples if s.overflow]
    assert full, "a bin filling at 100 %/day for 5 days overflows"
    for s in full:
        assert s.fill == 1.0
        assert s.dist_mm == pytest.approx(w.scenario.bins.mount_offset_mm)
    for s in samples:
        assert 0.0 <= s.fill <= 1.0
        assert s.dist_mm == pytest.approx(150.0 + 900.0 * (1.0 - s.fill))
        assert s.overflow == (s.fill == 1.0)


def test_a_fire_ramps_the_temperature_past_the_alarm_threshold() -> None:
    w = world(rest='[[event]]\nkind = "fire"\ndevice = "bin-0001"\nafter = "26h"')
    b = w.bin("bin-0001")
    ignition = START.timestamp() + 26 * 3600
    before = [b.sample(ignition - 3600 + m * 60.0) for m in range(60)]
    assert all(s.temp_c < 40 and not s.fire for s in before)
    during = [b.sample(ignition + m * 60.0) for m in range(0, 240)]
    threshold = 70.0  # a typical enclosure over-temperature alarm
    first = next(i for i, s in enumerate(during) if s.temp_c > threshold)
    assert 5 <= first <= 15  # 6 C/min from ambient: past 70 C in about 10 minutes
    assert 350.0 <= max(s.temp_c for s in during) <= 350.0 + 30.0  # the peak rides on the enclosure's own
    assert during[30].fire and not during[200].fire
    assert during[-1].temp_c < max(s.temp_c for s in during) / 2  # it burns out and cools


def test_knocked_over_bins_tilt_and_get_righted() -> None:
    w = world(bins="tilt_per_day = 1\ntilt_mean_h = 2")
    b = w.bin("bin-0001")
    t0 = START.timestamp()
    tilts = [b.sample(t0 + m * 300.0).tilt_deg for m in range(0, 20 * 24 * 12)]
    upright = [x for x in tilts if x < 45]
    over = [x for x in tilts if x >= 45]
    assert all(x <= 3.0 for x in upright)
    assert all(60 <= x <= 100 for x in over)
    episodes = sum(1 for a, c in zip(tilts, tilts[1:]) if a < 45 <= c)
    assert 8 <= episodes <= 35  # about one a day for 20 days (the windows take a little time out)


def test_battery_drains_by_night_and_charges_by_day() -> None:
    w = world(site="cloud_mean = 0.2\ncloud_spread = 0.1",
              bins="start_soc_min = 0.5\nstart_soc_max = 0.5\npanel_w = 0.5\nsleep_ua = 200")
    b = w.bin("bin-0001")
    day = START.timestamp() + 86400  # Tuesday 23 June 2026, London: sun up 03:43-20:22 UTC
    soc: dict[float, float] = {}
    mv: dict[float, float] = {}
    for m in range(0, 24 * 4 + 1):
        t = day + m * 900.0
        s = b.sample(t)
        b.reported(t)
        soc[t], mv[t] = b.battery.soc, s.batt_mv
    night = [soc[day + m * 900.0] for m in range(0, 12)]  # 00:00-02:45 UTC
    noon = [soc[day + m * 900.0] for m in range(40, 60)]  # 10:00-14:45 UTC
    assert all(a > c for a, c in zip(night, night[1:])), "night: every step loses charge"
    assert all(a < c for a, c in zip(noon, noon[1:])), "day: the panel out-charges the load"
    assert mv[day + 14 * 3600] > mv[day + 2 * 3600]


def test_enclosure_temperature_follows_the_daily_cycle() -> None:
    w = world(site="temp_mean_c = 15\ntemp_amp_c = 6\ncloud_mean = 0\ncloud_spread = 0")
    b = w.bin("bin-0001")
    day = START.timestamp()
    temps = {h: b.sample(day + h * 3600.0).temp_c for h in range(0, 48)}
    assert temps[14 + 24] > temps[3 + 24] + 8  # afternoon in the sun vs before dawn
    assert 5 < min(temps.values()) and max(temps.values()) < 40


def test_time_cannot_go_backwards() -> None:
    b = world().bin("bin-0001")
    b.sample(START.timestamp() + 100)
    with pytest.raises(ValueError, match="backwards"):
        b.sample(START.timestamp() + 50)
