"""Civil time at a site: the UTC offset (with daylight saving) and weekly schedules in local time.

People fill bins and trucks empty them by the clock on the wall, so the bins' hourly profiles and the
collection rounds are in the site's civil time (an IANA zone such as "Europe/London"), not in UTC. A site
without a zone uses local mean time rounded to the hour (longitude / 15).
"""

from __future__ import annotations

import datetime as _dt
import math
from zoneinfo import ZoneInfo

_MONDAY_EPOCH_H = 72  # 1970-01-01 was a Thursday: hour 0 of it is hour 72 of its week (Monday = 0)
_OFFSET_QUANTUM_S = 900.0  # zone transitions happen on quarter hours
_OFFSET_CACHE = 64


class LocalTime:
    """Converts between unix time and a site's civil time."""

    def __init__(self, tz: str | None, lon: float) -> None:
        self._zone = ZoneInfo(tz) if tz else None
        self._fixed = 3600.0 * round(lon / 15.0)
        self._cache: dict[int, float] = {}

    def offset(self, t: float) -> float:
        """Seconds to add to UTC to get civil time at t."""
        if self._zone is None:
            return self._fixed
        q = int(t // _OFFSET_QUANTUM_S)
        off = self._cache.get(q)
        if off is None:
            if len(self._cache) >= _OFFSET_CACHE:
                self._cache.clear()
            delta = _dt.datetime.fromtimestamp(q * _OFFSET_QUANTUM_S, self._zone).utcoffset()
            off = self._cache[q] = delta.total_seconds() if delta is not None else 0.0
        return off

    def week_hour(self, t: float) -> tuple[int, float, int]:
        """(hour of the week 0..167 with Monday 00:00 = 0, unix time at which that civil hour ends,
        civil days since 1970-01-01: a stable index for day-to-day variation)."""
        off = self.offset(t)
        local_h = math.floor((t + off) / 3600.0)
        return (local_h + _MONDAY_EPOCH_H) % 168, (local_h + 1) * 3600.0 - off, local_h // 24

    def to_utc(self, date: _dt.date, hour: float) -> float:
        """Unix time of civil `hour` (fractional, 0..24) on `date` at this site."""
        if self._zone is None:
            midnight = _dt.datetime(date.year, date.month, date.day, tzinfo=_dt.timezone.utc).timestamp()
            return midnight + hour * 3600.0 - self._fixed
        naive = _dt.datetime(date.year, date.month, date.day) + _dt.timedelta(hours=hour)
        return naive.replace(tzinfo=self._zone).timestamp()

    def date_of(self, t: float) -> _dt.date:
        """The civil date at t."""
        return _dt.datetime.fromtimestamp(t + self.offset(t), _dt.timezone.utc).date()


class WeeklySchedule:
    """Instants that recur on some weekdays at a civil time: e.g. a collection round, Mon and Thu 07:00."""

    def __init__(self, local: LocalTime, weekdays: tuple[int, ...], hour: float) -> None:
        if not weekdays:
            raise ValueError("a weekly schedule needs at least one weekday")
        self._local = local
        self._weekdays = frozenset(weekdays)
        self._hour = hour

    def next_after(self, t: float) -> float:
        """The first scheduled instant strictly after t."""
        date = self._local.date_of(t) - _dt.timedelta(days=1)
        for _ in range(9):
            if date.weekday() in self._weekdays:
                when = self._local.to_utc(date, self._hour)
                if when > t:
                    return when
            date += _dt.timedelta(days=1)
        raise AssertionError("a weekday recurs within 9 days")
