"""The sun: NOAA equations against published sunrise/sunset times, and the shape of daylight."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from simulator.world.sky import Sky, clear_sky_lux, cloud_transmission
from simulator.world.solar import solar_noon, sun_elevation, sunrise_sunset

UTC = dt.timezone.utc
BST = dt.timezone(dt.timedelta(hours=1))
AEST = dt.timezone(dt.timedelta(hours=10))

# Published values, each with its source. Tolerance: 2 minutes (the sources round to the minute or are
# computed for a slightly different spot; NOAA's equations are good to about a minute).
PUBLISHED = [
    pytest.param(
        # London, Houses of Parliament (51.4995 N, 0.1248 W), 21 June 2025: sunrise 04:42:38 BST, sunset
        # 21:22:06 BST. Table "data is for London, specifically the Houses of Parliament", Diamond Geezer,
        # "Summer Solstice London", 20 June 2025 (diamondgeezer.blogspot.com).
        51.4995, -0.1248, dt.date(2025, 6, 21),
        dt.datetime(2025, 6, 21, 4, 42, 38, tzinfo=BST), dt.datetime(2025, 6, 21, 21, 22, 6, tzinfo=BST),
        id="london-2025-06-21",
    ),
    pytest.param(
        # Melbourne (37 50' S, 145 E as the planetarium states), Thursday 21 June 2018: rise 7:35, set
        # 5:08 pm AEST. Melbourne Planetarium, Museums Victoria, "Skynotes June 2018".
        -37.8333, 145.0, dt.date(2018, 6, 21),
        dt.datetime(2018, 6, 21, 7, 35, tzinfo=AEST), dt.datetime(2018, 6, 21, 17, 8, tzinfo=AEST),
        id="melbourne-2018-06-21",
    ),
    pytest.param(
        # Same source, "Skynotes June 2016", Tuesday 21 June 2016: rise 7:36, set 5:08 pm AEST.
        -37.8333, 145.0, dt.date(2016, 6, 21),
        dt.datetime(2016, 6, 21, 7, 36, tzinfo=AEST), dt.datetime(2016, 6, 21, 17, 8, tzinfo=AEST),
        id="melbourne-2016-06-21",
    ),
]


@pytest.mark.parametrize("lat, lon, date, rise, set_", PUBLISHED)
def test_sunrise_sunset_match_published_values(lat: float, lon: float, date: dt.date, rise: dt.datetime, set_: dt.datetime) -> None:
    got_rise, got_set = sunrise_sunset(lat, lon, date)
    assert got_rise is not None and got_set is not None
    assert abs(got_rise - rise.timestamp()) < 120, dt.datetime.fromtimestamp(got_rise, UTC)
    assert abs(got_set - set_.timestamp()) < 120, dt.datetime.fromtimestamp(got_set, UTC)


def test_sun_is_on_the_horizon_at_sunrise_and_highest_at_noon() -> None:
    lat, lon, date = 51.4995, -0.1248, dt.date(2025, 6, 21)
    rise, set_ = sunrise_sunset(lat, lon, date)
    assert rise is not None and set_ is not None
    noon = solar_noon(lon, date)
    # At sunrise the refracted upper limb touches the horizon: the centre's apparent elevation is about
    # -0.27 (semi-diameter) minus the refraction difference between NOAA's two models, within half a degree.
    for t in (rise, set_):
        assert -0.8 < sun_elevation(lat, lon, t) < 0.0
    # Noon at the solstice: 90 - latitude + 23.44 (obliquity), plus a little refraction.
    assert sun_elevation(lat, lon, noon) == pytest.approx(90 - lat + 23.44, abs=0.05)
    for dt_s in (-600, 600):
        assert sun_elevation(lat, lon, noon + dt_s) < sun_elevation(lat, lon, noon)


def test_polar_night_and_midnight_sun_have_no_sunrise() -> None:
    assert sunrise_sunset(78.22, 15.65, dt.date(2025, 12, 21)) == (None, None)  # Longyearbyen, winter
    assert sunrise_sunset(78.22, 15.65, dt.date(2025, 6, 21)) == (None, None)  # and summer
    noon = solar_noon(15.65, dt.date(2025, 6, 21))
    assert sun_elevation(78.22, 15.65, noon + 12 * 3600) > 0  # the sun is up at midnight


def test_twilight_illuminance_follows_the_ams_glossary_anchors() -> None:
    # AMS Glossary of Meteorology: clear-sky horizontal illuminance ~585-410 lx at sunset, ~3.5-2 lx at
    # the end of civil twilight (-6), ~0.008 lx at the end of nautical twilight (-12).
    assert 410 <= clear_sky_lux(-0.833) <= 585
    assert 2 <= clear_sky_lux(-6) <= 3.5
    assert clear_sky_lux(-12) == pytest.approx(0.008, rel=0.01)
    assert clear_sky_lux(-30) == pytest.approx(0.002)  # night floor: airglow
    assert 90_000 < clear_sky_lux(90) < 120_000  # clear sky, sun overhead: ~100 klx
    lux = [clear_sky_lux(e / 10) for e in range(-200, 900)]
    assert all(a <= b for a, b in zip(lux, lux[1:])), "illuminance must rise with the sun"


def test_clouds_dim_the_day_and_vary_slowly() -> None:
    assert cloud_transmission(0.0) == 1.0
    assert cloud_transmission(1.0) == pytest.approx(0.25)
    sky = Sky(1, "s", 51.5, -0.12, cloud_mean=0.5, cloud_spread=0.5, temp_mean_c=15, temp_amp_c=5)
    t0 = dt.datetime(2026, 6, 21, 12, tzinfo=UTC).timestamp()
    covers = [sky.cloud_cover(t0 + i * 60) for i in range(24 * 60)]
    assert min(covers) >= 0 and max(covers) <= 1 and max(covers) - min(covers) > 0.1
    assert max(abs(a - b) for a, b in zip(covers, covers[1:])) < 0.02  # slow: < 2 % cover per minute


def test_insolation_is_the_integral_of_irradiance() -> None:
    sky = Sky(3, "s", 51.5, -0.12, cloud_mean=0.4, cloud_spread=0.4, temp_mean_c=15, temp_amp_c=5)
    t0 = dt.datetime(2026, 6, 20, 18, tzinfo=UTC).timestamp()
    t1 = t0 + 30 * 3600  # across a UTC midnight and a whole day
    step = 30.0
    riemann = sum(sky.irradiance(t0 + (i + 0.5) * step) * step for i in range(int((t1 - t0) / step)))
    assert sky.insolation(t0, t1) == pytest.approx(riemann, rel=0.01)
    # additive over any split
    mid = t0 + 12345.6
    assert sky.insolation(t0, mid) + sky.insolation(mid, t1) == pytest.approx(sky.insolation(t0, t1))
    night = dt.datetime(2026, 6, 21, 0, tzinfo=UTC).timestamp()
    assert sky.insolation(night, night + 3600) == 0.0  # London midsummer: dark from 21:30 to 03:00 UTC


def test_air_temperature_peaks_in_the_afternoon() -> None:
    sky = Sky(5, "s", 0.0, 0.0, cloud_mean=0, cloud_spread=0, temp_mean_c=20, temp_amp_c=6)
    day = dt.datetime(2026, 6, 21, tzinfo=UTC).timestamp()
    temps = [sky.air_temp(day + h * 3600) for h in range(24)]
    assert max(range(24), key=temps.__getitem__) in (14, 15, 16)
    assert min(range(24), key=temps.__getitem__) in (2, 3, 4)
    assert all(20 - 6 - 1.5 <= x <= 20 + 6 + 1.5 for x in temps)
    assert not math.isnan(sum(temps))
