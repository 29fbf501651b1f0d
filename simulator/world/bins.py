"""A waste bin in the street: fill, collections, overflow, fire, tilt, lid, enclosure temperature, battery.

Fill grows at a rate that depends on the bin's use (residential, commercial, park), the civil hour of the
week (`PROFILES`), a per-bin factor (some bins sit on busier corners) and a per-day factor (some days are
busier); it is integrated exactly hour by hour, so the result does not depend on how often the bin is
sampled. Collection rounds empty it at the site's scheduled times; a missed collection leaves it. At a
fill of 1 the bin is full: the surface cannot rise above the rim, so the true fill saturates at 1.0 and
`overflow` is set (waste goes beside the bin), which is the `full` alarm condition.

Fires, knock-overs (tilt) and lids left open are Poisson events whose next occurrence is drawn ahead of
time from the bin's own random stream, so they too happen at the same instants however the bin is
sampled. A fire adds a temperature ramp (`fire_ramp_c_per_min` up to `fire_peak_c`, for `fire_burn_min`,
then an exponential cool-down) to the enclosure temperature, which otherwise follows the air temperature
with a first-order lag plus a solar gain scaled by the bin's sun exposure (which also shades its panel).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulator.scenario import BIN_EVENTS, BinParams, Collection, Event
from simulator.world import rng
from simulator.world.battery import Battery
from simulator.world.localtime import LocalTime, WeeklySchedule
from simulator.world.sky import Sky
from simulator.world.truth import TruthLog

_NEVER = math.inf
FIRE_COOL_TAU_S = 1800.0
KNOCKED_OVER_DEG = (60.0, 100.0)
RESIDUAL_FILL = (0.0, 0.03)  # what the truck leaves behind


def _week(weekday: list[float], saturday: list[float], sunday: list[float]) -> tuple[float, ...]:
    """168 hourly weights (Monday 00:00 first), normalised to a mean of 1."""
    hours = weekday * 5 + saturday + sunday
    mean = sum(hours) / len(hours)
    return tuple(h / mean for h in hours)


def _day(night: float, spans: list[tuple[int, int, float]], base: float) -> list[float]:
    day = [base] * 24
    for h in range(0, 6):
        day[h] = night
    for a, b, w in spans:
        for h in range(a, b):
            day[h] = w
    return day


# Relative waste deposit rate by civil hour of the week. Assumptions, not measurements: households drop
# waste before work and in the evening and more at weekends; shops and offices during opening hours with a
# lunch peak and little on Sundays; parks in the afternoon, much more at weekends.
_RES = _day(0.15, [(7, 9, 2.0), (17, 21, 2.2)], 1.0)
_COM = _day(0.05, [(6, 8, 0.6), (8, 12, 1.6), (12, 14, 2.6), (14, 19, 1.6), (19, 22, 0.8), (22, 24, 0.2)], 1.0)
_PARK = _day(0.05, [(6, 10, 0.5), (10, 12, 1.2), (12, 17, 2.0), (17, 21, 1.2), (21, 24, 0.2)], 0.8)
PROFILES: dict[str, tuple[float, ...]] = {
    "residential": _week(_RES, [w * 1.2 for w in _RES], [w * 1.2 for w in _RES]),
    "commercial": _week(_COM, [w * 0.8 for w in _COM], [w * 0.3 for w in _COM]),
    "park": _week(_PARK, [w * 2.0 for w in _PARK], [w * 2.2 for w in _PARK]),
}


def _next(r: random.Random, t: float, rate: float) -> float:
    """The next arrival of a Poisson process of `rate` per second after t (never, at rate 0)."""
    return t + r.expovariate(rate) if rate > 0.0 else _NEVER


@dataclass(slots=True)
class BinSample:
    """What the street does to one bin's sensors at one instant (true values, before sensor faults)."""

    t: float
    fill: float  # ratio 0..1 (saturates at 1)
    dist_mm: float  # sensor face to the waste surface
    temp_c: float  # inside the enclosure
    batt_mv: float
    tilt_deg: float  # from upright
    lid_open: bool
    overflow: bool  # demand beyond a full bin: the `full` alarm condition
    fire: bool  # a fire is burning (ground truth for the `fire` alarm)


class BinModel:
    """One bin. Call `sample(t)` with non-decreasing t (the wake that reads the sensors) and `reported(t)`
    after each report is sent (the radio's charge)."""

    def __init__(
        self,
        *,
        device_id: str,
        seed: int,
        use: str,
        index: int,
        site_bins: int,
        params: BinParams,
        collection: Collection,
        sky: Sky,
        local: LocalTime,
        link: str,
        start: float,
        events: tuple[Event, ...] = (),
        truth: TruthLog | None = None,
    ) -> None:
        self.device_id = device_id
        self._p = params
        self._sky = sky
        self._local = local
        self._truth = truth
        r = rng.stream(seed, device_id, "bin")  # draws the per-bin constants below
        # one stream per process, so that how often the bin is sampled never reorders their draws
        self._r_collect = rng.stream(seed, device_id, "collection")
        self._r_fire = rng.stream(seed, device_id, "fire")
        self._r_tilt = rng.stream(seed, device_id, "tilt")
        self._r_lid = rng.stream(seed, device_id, "lid")
        per_day = params.fill_rate(use) * (0.6 + 0.8 * r.random())
        self._profile = PROFILES[use]  # relative rate by week hour, shared by all bins of a use
        self._scale = per_day / 86400.0  # fill per second at relative rate 1
        self._day_key = rng.derive_key(seed, device_id, "day")
        self._depth = params.depth_mm
        self._offset = params.mount_offset_mm
        self._upright_deg = 3.0 * r.random()
        self._report_mas = params.report_mas_serial if link == "serial" else params.report_mas_mqtt
        self._tau = params.enclosure_tau_s
        # collection: this bin's place in the round
        window = collection.window_h * index / max(site_bins, 1)
        self._schedule = WeeklySchedule(local, collection.weekdays, collection.hour + window)
        self._miss = collection.miss_rate
        # state
        self._t = start
        self.level = 0.6 * r.random()
        self._next_collect = self._schedule.next_after(start)
        self._enclosure = sky.air_temp(start)
        soc = params.start_soc_min + (params.start_soc_max - params.start_soc_min) * r.random()
        sun = 0.4 + 0.6 * r.random()  # how much of the sky's sun reaches this bin (trees, buildings)
        self._gain = params.solar_gain_c * sun / 1000.0  # C per W/m2
        self.battery = Battery(sky, params.capacity_mah, soc, params.sleep_ua, params.panel_w, sun, start)
        # events: Poisson processes drawn ahead, plus scripted ones
        self._fire_rate = params.fire_per_year / (365.25 * 86400.0)
        self._tilt_rate = params.tilt_per_day / 86400.0
        self._lid_rate = params.lid_per_day / 86400.0
        self._scripted = sorted((e for e in events if e.device == device_id and e.kind in BIN_EVENTS),
                                key=lambda e: e.at)
        self._fire_at = _next(self._r_fire, start, self._fire_rate)
        self._fire_start = _NEVER
        self._tilt_at = _next(self._r_tilt, start, self._tilt_rate)
        self._tilt_end = -_NEVER
        self._tilt_deg = self._upright_deg
        self._lid_at = _next(self._r_lid, start, self._lid_rate)
        self._lid_end = -_NEVER
        self._day: int | None = None
        self._day_factor = 0.0  # this civil day's variation times _scale

    # --- the public API ---------------------------------------------------------------------------
    def sample(self, t: float) -> BinSample:
        """Advance the bin to t, charge one wake, and return the true values the sensors face."""
        if t < self._t:
            raise ValueError(f"{self.device_id}: time went backwards ({t} < {self._t})")
        while self._scripted and self._scripted[0].at <= t:
            self._apply_scripted(self._scripted.pop(0))
        self._advance_events(t)
        self._advance_fill(t)
        self._advance_temperature(t)
        self.battery.advance(t)
        self.battery.draw(self._p.wake_mas)
        self._t = t
        fill = self.level if self.level < 1.0 else 1.0
        temp = self._enclosure + self._fire_excess(t)
        s = BinSample(
            t, fill, self._offset + self._depth * (1.0 - fill), temp, self.battery.mv,
            self._tilt_deg if t < self._tilt_end else self._upright_deg,
            t < self._lid_end, self.level >= 1.0, self._fire_start <= t < self._fire_start + self._burn_s(),
        )
        if self._truth is not None:
            self._truth.bin_sample(self.device_id, s)
        return s

    def reported(self, t: float) -> None:
        """The device sent a report at t: take the link's radio charge from the battery."""
        self.battery.advance(max(t, self._t))
        self.battery.draw(self._report_mas)

    def ignite(self, t: float) -> None:
        """Start a fire at t (scripted events and tests)."""
        self._fire_start = t
        if self._truth is not None:
            self._truth.event(t, self.device_id, "fire")

    # --- internals --------------------------------------------------------------------------------
    def _apply_scripted(self, e: Event) -> None:
        if e.kind == "fire":
            self.ignite(e.at)
        elif e.kind == "tilt":
            self._tilt(e.at, e.duration_s)
        elif e.kind == "lid":
            self._lid(e.at, e.duration_s)

    def _tilt(self, at: float, duration: float) -> None:
        lo, hi = KNOCKED_OVER_DEG
        self._tilt_deg = lo + (hi - lo) * self._r_tilt.random()
        self._tilt_end = at + duration
        if self._truth is not None:
            self._truth.event(at, self.device_id, "tilt")

    def _lid(self, at: float, duration: float) -> None:
        self._lid_end = at + duration
        if self._truth is not None:
            self._truth.event(at, self.device_id, "lid_open")

    def _advance_events(self, t: float) -> None:
        while self._fire_at <= t:
            if self._fire_start == _NEVER or self._fire_at > self._fire_start + self._burn_s():
                self.ignite(self._fire_at)
            self._fire_at = _next(self._r_fire, self._fire_at, self._fire_rate)
        while self._tilt_at <= t:
            self._tilt(self._tilt_at, self._r_tilt.expovariate(1.0 / (self._p.tilt_mean_h * 3600.0)))
            self._tilt_at = _next(self._r_tilt, self._tilt_end, self._tilt_rate)
        while self._lid_at <= t:
            self._lid(self._lid_at, self._r_lid.expovariate(1.0 / (self._p.lid_mean_h * 3600.0)))
            self._lid_at = _next(self._r_lid, self._lid_end, self._lid_rate)

    def _burn_s(self) -> float:
        return self._p.fire_burn_min * 60.0

    def _fire_excess(self, t: float) -> float:
        """Degrees the fire adds above the enclosure's normal temperature at t."""
        since = t - self._fire_start
        if since < 0.0:
            return 0.0
        p = self._p
        ramp_s = p.fire_peak_c / p.fire_ramp_c_per_min * 60.0
        burn = self._burn_s()
        if since <= burn:
            return p.fire_peak_c if since >= ramp_s else since * p.fire_ramp_c_per_min / 60.0
        peak = p.fire_peak_c if burn >= ramp_s else burn * p.fire_ramp_c_per_min / 60.0
        return peak * math.exp(-(since - burn) / FIRE_COOL_TAU_S)

    def _advance_fill(self, t: float) -> None:
        """Integrate the deposit rate from the last instant to t, emptying at each collection on the way."""
        now = self._t
        while self._next_collect <= t:
            self._fill_between(now, self._next_collect)
            now = self._next_collect
            if self._r_collect.random() >= self._miss:
                lo, hi = RESIDUAL_FILL
                self.level = lo + (hi - lo) * self._r_collect.random()
                if self._truth is not None:
                    self._truth.event(now, self.device_id, "collected")
            self._next_collect = self._schedule.next_after(now)
        self._fill_between(now, t)

    def _fill_between(self, t0: float, t1: float) -> None:
        level = self.level
        local = self._local
        profile = self._profile
        scale = self._scale
        while t0 < t1:
            week_hour, hour_end, day = local.week_hour(t0)
            end = hour_end if hour_end < t1 else t1
            if day != self._day:
                self._day = day
                self._day_factor = (0.5 + rng.unit(self._day_key, day)) * scale
            level += profile[week_hour] * self._day_factor * (end - t0)
            t0 = end
        self.level = level

    def _advance_temperature(self, t: float) -> None:
        """First-order lag of the enclosure towards air temperature plus solar gain (exact for a step)."""
        dt = t - self._t
        if dt <= 0.0:
            return
        target = self._sky.air_temp(t) + self._gain * self._sky.irradiance(t)
        self._enclosure = target + (self._enclosure - target) * math.exp(-dt / self._tau)
