"""One site's sky: sun elevation, daylight illuminance with clouds, solar irradiance and air temperature.

Everything here is a pure function of (site, seed, time): two devices at one site that sample the same
instant see the same sky. The sun's elevation is computed once per site on a 2-minute grid per UTC day
(NOAA equations, `solar.py`) and interpolated linearly, which is exact to well under 0.01 degree and makes
a sample cost a few arithmetic operations instead of a dozen trigonometric calls. The grid also holds the
cumulative insolation, so a battery's solar charge between two samples is one subtraction.

Models and sources (see docs/simulator.md, "The world"):
- clear-sky illuminance, sun above the horizon: extraterrestrial solar illuminance 133.8 klx times
  sin(elevation), attenuated as 0.7 ** (AM ** 0.678) (Meinel & Meinel 1976, the usual air-mass attenuation
  of direct sunlight), times 1.1 for the diffuse sky, plus 700 lx of sky light at the horizon; air mass
  AM from Kasten & Young (1989).
- twilight: log-linear between the clear-sky horizontal illuminances of the AMS Glossary of Meteorology
  ("civil twilight": about 585-410 lx at sunset to 3.5-2 lx at -6 degrees; "nautical twilight": to
  0.008 lx at -12 degrees; "astronomical twilight": to 6e-4 lx at -18 degrees), never below 0.002 lx
  (clear moonless night sky with airglow).
- clouds: cover N/8 in [0, 1] is slow noise (knots every 3 h) around the site's mean; illuminance and
  irradiance are scaled by 1 - 0.75 (N/8) ** 3.4 (Kasten & Czeplak 1980).
- irradiance: illuminance / 115 lm/W, a typical luminous efficacy of global daylight.
- air temperature: a daily cosine peaking at 15:00 local mean solar time, plus slow noise of +/-1.5 C.
"""

from __future__ import annotations

import math

from simulator.world import rng
from simulator.world.solar import sun_elevation

GRID_S = 120.0  # elevation / insolation grid step
_GRID_N = int(86400 / GRID_S)  # intervals per day
_DAY_CACHE = 4  # UTC days kept per site (today, yesterday, and room for a gap)

SOLAR_ILLUMINANCE_LX = 133_800.0
HORIZON_SKY_LX = 700.0
NIGHT_LX = 0.002
DAYLIGHT_EFFICACY_LM_PER_W = 115.0
CLOUD_KNOT_S = 3 * 3600.0
TEMP_NOISE_C = 1.5
TEMP_KNOT_S = 6 * 3600.0
TEMP_PEAK_SOLAR_HOUR = 15.0

# (apparent elevation in degrees, log10 of clear-sky horizontal illuminance in lux), AMS Glossary.
_TWILIGHT = (
    (-18.0, math.log10(6e-4)),
    (-12.0, math.log10(0.008)),
    (-6.0, math.log10(2.7)),
    (-0.833, math.log10(500.0)),
    (0.0, math.log10(HORIZON_SKY_LX)),
)


def clear_sky_lux(elevation_deg: float) -> float:
    """Horizontal illuminance (lux) under a clear sky with the sun at this apparent elevation."""
    if elevation_deg >= 0.0:
        zenith = 90.0 - elevation_deg
        air_mass = 1.0 / (math.cos(zenith * math.pi / 180.0) + 0.50572 * math.pow(96.07995 - zenith, -1.6364))
        attenuation = math.pow(0.7, math.pow(air_mass, 0.678))
        direct = SOLAR_ILLUMINANCE_LX * math.sin(elevation_deg * math.pi / 180.0) * attenuation
        return HORIZON_SKY_LX + 1.1 * direct
    if elevation_deg <= _TWILIGHT[0][0]:
        return NIGHT_LX
    for (e0, l0), (e1, l1) in zip(_TWILIGHT, _TWILIGHT[1:]):
        if elevation_deg <= e1:
            lux = math.pow(10.0, l0 + (l1 - l0) * (elevation_deg - e0) / (e1 - e0))
            return lux if lux > NIGHT_LX else NIGHT_LX
    raise AssertionError("unreachable: elevation between -18 and 0 is in the table")


def cloud_transmission(cover: float) -> float:
    """Fraction of clear-sky light that gets through a cloud cover in [0, 1] (Kasten & Czeplak 1980)."""
    return 1.0 - 0.75 * math.pow(cover, 3.4)


class _Day:
    """One UTC day of a site's sky on the grid: elevation (deg), irradiance (W/m2), cumulative (J/m2)."""

    __slots__ = ("elev", "irr", "cum")

    def __init__(self, elev: list[float], irr: list[float], cum: list[float]) -> None:
        self.elev = elev
        self.irr = irr
        self.cum = cum


class Sky:
    """The sky over one site. Cheap to query many times at the same or increasing instants."""

    def __init__(
        self,
        seed: int,
        site: str,
        lat: float,
        lon: float,
        *,
        cloud_mean: float,
        cloud_spread: float,
        temp_mean_c: float,
        temp_amp_c: float,
    ) -> None:
        self.lat = lat
        self.lon = lon
        self._cloud_mean = cloud_mean
        self._cloud_spread = cloud_spread
        self._clouds = rng.SlowNoise(rng.derive_key(seed, site, "clouds"), CLOUD_KNOT_S)
        self._temp_noise = rng.SlowNoise(rng.derive_key(seed, site, "temperature"), TEMP_KNOT_S)
        self._temp_mean = temp_mean_c
        self._temp_amp = temp_amp_c
        self._days: dict[int, _Day] = {}
        self._last_day = -1
        self._last_grid: _Day | None = None
        self._lux_t = math.nan
        self._lux = 0.0

    # --- the grid -------------------------------------------------------------------------------
    def _day(self, day: int) -> _Day:
        grid = self._last_grid
        if day == self._last_day and grid is not None:
            return grid
        grid = self._days.get(day)
        if grid is not None:
            self._last_day, self._last_grid = day, grid
            return grid
        t0 = day * 86400.0
        elev = [sun_elevation(self.lat, self.lon, t0 + i * GRID_S) for i in range(_GRID_N + 1)]
        irr = [
            clear_sky_lux(e) * cloud_transmission(self.cloud_cover(t0 + i * GRID_S)) / DAYLIGHT_EFFICACY_LM_PER_W
            if e > 0.0
            else 0.0
            for i, e in enumerate(elev)
        ]
        cum = [0.0] * (_GRID_N + 1)
        half = 0.5 * GRID_S
        for i in range(1, _GRID_N + 1):
            cum[i] = cum[i - 1] + (irr[i - 1] + irr[i]) * half
        if len(self._days) >= _DAY_CACHE:
            del self._days[min(self._days)]
        grid = self._days[day] = _Day(elev, irr, cum)
        self._last_day, self._last_grid = day, grid
        return grid

    def elevation(self, t: float) -> float:
        """Apparent sun elevation (degrees) at unix time t, interpolated on the 2-minute grid."""
        day = int(t // 86400.0)
        grid = self._day(day)
        x = (t - day * 86400.0) / GRID_S
        i = int(x)
        e = grid.elev
        return e[i] + (e[i + 1] - e[i]) * (x - i)

    def insolation(self, t0: float, t1: float) -> float:
        """Solar energy on a horizontal square metre between t0 and t1 (J/m2), clouds included."""
        if t1 <= t0:
            return 0.0
        d0 = int(t0 // 86400.0)
        d1 = int(t1 // 86400.0)
        if d0 == d1:
            return self._cum(d0, t1) - self._cum(d0, t0)
        total = self._day(d0).cum[-1] - self._cum(d0, t0)
        for d in range(d0 + 1, d1):
            total += self._day(d).cum[-1]
        return total + self._cum(d1, t1)

    def _cum(self, day: int, t: float) -> float:
        grid = self._day(day)
        x = (t - day * 86400.0) / GRID_S
        i = int(x)
        if i >= _GRID_N:
            return grid.cum[-1]
        f = x - i
        a = grid.irr[i]
        b = a + (grid.irr[i + 1] - a) * f
        return grid.cum[i] + (a + b) * 0.5 * f * GRID_S

    # --- light and weather ----------------------------------------------------------------------
    def cloud_cover(self, t: float) -> float:
        """Cloud cover in [0, 1] (N/8 oktas): the site's mean plus slow noise, clipped."""
        c = self._cloud_mean + self._cloud_spread * (2.0 * self._clouds(t) - 1.0)
        return 0.0 if c < 0.0 else 1.0 if c > 1.0 else c

    def lux(self, t: float) -> float:
        """Natural horizontal illuminance (lux) at t: sun or twilight, through the clouds."""
        if t == self._lux_t:
            return self._lux
        lux = clear_sky_lux(self.elevation(t)) * cloud_transmission(self.cloud_cover(t))
        self._lux_t = t
        self._lux = lux if lux > NIGHT_LX else NIGHT_LX
        return self._lux

    def irradiance(self, t: float) -> float:
        """Global horizontal solar irradiance (W/m2) at t, clouds included; 0 with the sun down.
        Interpolated on the grid, so it is exactly the rate that `insolation` integrates."""
        day = int(t // 86400.0)
        grid = self._day(day)
        x = (t - day * 86400.0) / GRID_S
        i = int(x)
        irr = grid.irr
        return irr[i] + (irr[i + 1] - irr[i]) * (x - i)

    def air_temp(self, t: float) -> float:
        """Air temperature (Celsius): daily cycle peaking at 15:00 local mean solar time, slow noise."""
        solar_hour = (t / 3600.0 + self.lon / 15.0) % 24.0
        cycle = math.cos((solar_hour - TEMP_PEAK_SOLAR_HOUR) * (math.pi / 12.0))
        noise = TEMP_NOISE_C * (2.0 * self._temp_noise(t) - 1.0)
        return self._temp_mean + self._temp_amp * cycle + noise
