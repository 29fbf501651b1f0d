"""The sun's position from latitude, longitude and UTC time: the NOAA solar calculator equations.

These are the equations of NOAA's Global Monitoring Laboratory solar calculator (its "NOAA_Solar_Calculations"
spreadsheet, after Jean Meeus, *Astronomical Algorithms*): the sun's geometric mean longitude and anomaly,
the equation of centre, apparent longitude, obliquity, declination and the equation of time, then the
hour angle, the zenith angle and NOAA's approximate atmospheric refraction. NOAA gives their accuracy as
about a minute for sunrise and sunset between latitudes +/-72 degrees, which is what the lamps' dusk
switching and the bins' solar panels need.

Times are unix seconds (UTC). Angles in the public functions are degrees.
"""

from __future__ import annotations

import datetime as _dt
import math

_RAD = math.pi / 180.0
_DEG = 180.0 / math.pi
# Sunrise/sunset: the sun's upper limb on the horizon, 34' of refraction + 16' of semi-diameter below.
SUNRISE_ZENITH_DEG = 90.833


def _sun_declination_and_eot(unix_t: float) -> tuple[float, float]:
    """(declination in radians, equation of time in minutes) at a UTC instant."""
    jd = unix_t / 86400.0 + 2440587.5
    c = (jd - 2451545.0) / 36525.0  # Julian centuries since J2000.0
    mean_long = (280.46646 + c * (36000.76983 + c * 0.0003032)) % 360.0
    mean_anom = 357.52911 + c * (35999.05029 - 0.0001537 * c)
    ecc = 0.016708634 - c * (0.000042037 + 0.0000001267 * c)
    m = mean_anom * _RAD
    centre = (
        math.sin(m) * (1.914602 - c * (0.004817 + 0.000014 * c))
        + math.sin(2.0 * m) * (0.019993 - 0.000101 * c)
        + math.sin(3.0 * m) * 0.000289
    )
    omega = (125.04 - 1934.136 * c) * _RAD
    app_long = (mean_long + centre - 0.00569 - 0.00478 * math.sin(omega)) * _RAD
    seconds = 21.448 - c * (46.815 + c * (0.00059 - c * 0.001813))
    obliq = (23.0 + (26.0 + seconds / 60.0) / 60.0 + 0.00256 * math.cos(omega)) * _RAD
    decl = math.asin(math.sin(obliq) * math.sin(app_long))
    y = math.tan(obliq / 2.0) ** 2
    l0 = mean_long * _RAD
    eot = 4.0 * _DEG * (
        y * math.sin(2.0 * l0)
        - 2.0 * ecc * math.sin(m)
        + 4.0 * ecc * y * math.sin(m) * math.cos(2.0 * l0)
        - 0.5 * y * y * math.sin(4.0 * l0)
        - 1.25 * ecc * ecc * math.sin(2.0 * m)
    )
    return decl, eot


def _refraction_deg(elevation_deg: float) -> float:
    """NOAA's approximate atmospheric refraction (degrees) to add to a geometric elevation."""
    e = elevation_deg
    if e > 85.0:
        return 0.0
    if e > 5.0:
        te = math.tan(e * _RAD)
        arcsec = 58.1 / te - 0.07 / te**3 + 0.000086 / te**5
    elif e > -0.575:
        arcsec = 1735.0 + e * (-518.2 + e * (103.4 + e * (-12.79 + e * 0.711)))
    else:
        arcsec = -20.772 / math.tan(e * _RAD)
    return arcsec / 3600.0


def sun_elevation(lat_deg: float, lon_deg: float, unix_t: float) -> float:
    """Apparent elevation of the sun's centre above the horizon (degrees, refraction included).

    Longitude is positive east, latitude positive north.
    """
    decl, eot = _sun_declination_and_eot(unix_t)
    minutes_utc = (unix_t % 86400.0) / 60.0
    true_solar_min = (minutes_utc + eot + 4.0 * lon_deg) % 1440.0
    hour_angle = (true_solar_min / 4.0 - 180.0) * _RAD
    lat = lat_deg * _RAD
    cos_zen = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    geometric = 90.0 - math.acos(max(-1.0, min(1.0, cos_zen))) * _DEG
    return geometric + _refraction_deg(geometric)


def _midnight_utc(date: _dt.date) -> float:
    return _dt.datetime(date.year, date.month, date.day, tzinfo=_dt.timezone.utc).timestamp()


def solar_noon(lon_deg: float, date: _dt.date) -> float:
    """UTC instant (unix seconds) of the solar noon whose local (mean solar) date is `date`."""
    midnight = _midnight_utc(date)
    t = midnight + (720.0 - 4.0 * lon_deg) * 60.0
    for _ in range(2):  # the equation of time at noon itself, not at midnight
        _, eot = _sun_declination_and_eot(t)
        t = midnight + (720.0 - 4.0 * lon_deg - eot) * 60.0
    return t


def sunrise_sunset(
    lat_deg: float, lon_deg: float, date: _dt.date, zenith_deg: float = SUNRISE_ZENITH_DEG
) -> tuple[float | None, float | None]:
    """(sunrise, sunset) as unix seconds for the solar day around the local solar noon of `date`.

    `None` for both in polar day or polar night. `zenith_deg` 96, 102, 108 give civil, nautical and
    astronomical twilight instead. Each event is refined three times with the declination and equation
    of time at the event itself, as NOAA's calculator does, so the result is good to about a minute.
    """
    cos_z = math.cos(zenith_deg * _RAD)
    return _event(lat_deg, lon_deg, date, cos_z, -1.0), _event(lat_deg, lon_deg, date, cos_z, 1.0)


def _event(lat_deg: float, lon_deg: float, date: _dt.date, cos_z: float, sign: float) -> float | None:
    """Sunrise (sign -1) or sunset (+1): the hour angle at which the sun's zenith is acos(cos_z)."""
    midnight = _midnight_utc(date)
    lat = lat_deg * _RAD
    t = solar_noon(lon_deg, date)
    for _ in range(3):
        decl, eot = _sun_declination_and_eot(t)
        cos_ha = cos_z / (math.cos(lat) * math.cos(decl)) - math.tan(lat) * math.tan(decl)
        if not -1.0 <= cos_ha <= 1.0:
            return None
        ha_min = 4.0 * math.acos(cos_ha) * _DEG
        # the event's own solar noon shifts with the equation of time at the event
        t = midnight + (720.0 - 4.0 * lon_deg - eot + sign * ha_min) * 60.0
    return t
