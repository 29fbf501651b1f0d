"""A streetlight: the LED luminaire's electrics, ageing, flicker and failure, and the light its sensor sees.

Electrics (an LED driver with dimming): at dimming level d (the driver's floor is 10 %) the LEDs take
`rated_w * 0.92 * d`; the driver's efficiency falls at light load (0.92 - 0.12 (1 - d)^2) and so does its
power factor (0.97 - 0.35 (1 - d)^2), which is the shape of common constant-current driver datasheets
(efficiency and PF against load). The controller itself draws `standby_w` at PF 0.5 all the time. Current
is P / (V * PF). Mains voltage is the site's nominal with +/-2 % slow variation and a per-lamp line drop
of up to 2 %. Energy is integrated exactly between state changes (the device's on/dim commands, failure).

Ageing: lumen output follows the exponential lumen-maintenance model of IES TM-21, L(t) = exp(-a t) with
a set by the rated L70 life. Operating hours accumulate while the lamp is on. Life ends at a Weibull
failure age (shape `weibull_beta` > 1, so the failure rate rises with age) drawn once, conditional on
the lamp's (random) age at the start. A failed luminaire (open LED string, dead driver) draws only the
controller's standby power when switched on: about 4 mA. In its last `flicker_h` operating hours the
driver flickers more and more often: a flickering sample reads 10-90 % of the normal power and light.

The sensor: the site's natural illuminance times a per-lamp shading factor, plus the spill of
neighbouring lamps (a few lux, `spill_lux` with +/-50 % per lamp) when the sky is dark enough for them
to be on (below `NEIGHBOURS_ON_LUX`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.scenario import Event, LightParams
from simulator.world import rng
from simulator.world.rng import SlowNoise
from simulator.world.sky import Sky
from simulator.world.truth import TruthLog

MIN_DIM = 0.1
LED_EFFICIENCY_FULL = 0.92
STANDBY_PF = 0.5
NEIGHBOURS_ON_LUX = 30.0
MAINS_VARIATION = 0.02
MAX_LINE_DROP = 0.02


@dataclass(slots=True)
class LightSample:
    """What one streetlight's light sensor and power meter face at one instant (true values)."""

    t: float
    lux: float  # at the light sensor
    on: bool  # as commanded by the device
    dim: float  # commanded level 0..1 (applied with the driver's 10 % floor)
    power_w: float
    volt_v: float
    curr_ma: float
    energy_wh: float  # since the model started
    lumens: float  # light out of the luminaire
    failed: bool
    flicker: bool


def driver_input(rated_w: float, standby_w: float, on: bool, dim: float) -> tuple[float, float]:
    """(input power W, power factor) of the luminaire at a state; off or failed = (standby, 0.5)."""
    if not on:
        return standby_w, STANDBY_PF
    d = MIN_DIM if dim < MIN_DIM else 1.0 if dim > 1.0 else dim
    light_load = (1.0 - d) * (1.0 - d)
    led_w = rated_w * LED_EFFICIENCY_FULL * d
    p = led_w / (LED_EFFICIENCY_FULL - 0.12 * light_load) + standby_w
    return p, 0.97 - 0.35 * light_load


class LampModel:
    """One streetlight. `set_output(t, on, dim)` when the device switches; `sample(t)` to read."""

    def __init__(
        self,
        *,
        device_id: str,
        seed: int,
        params: LightParams,
        spill_lux: float,
        sky: Sky,
        mains: SlowNoise,
        start: float,
        events: tuple[Event, ...] = (),
        truth: TruthLog | None = None,
    ) -> None:
        self.device_id = device_id
        self._p = params
        self._sky = sky
        self._mains = mains
        self._truth = truth
        r = rng.stream(seed, device_id, "lamp")
        self._rng = r
        self._shade = 0.7 + 0.3 * r.random()
        self._spill = spill_lux * (0.5 + r.random())
        self._drop = 1.0 - MAX_LINE_DROP * r.random()
        self._alpha = -math.log(0.7) / params.l70_h
        self.age_h = params.age_max_h * r.random()
        eta, beta = params.weibull_eta_h, params.weibull_beta
        u = 1.0 - r.random()  # (0, 1]
        self.fail_age_h = eta * ((self.age_h / eta) ** beta - math.log(u)) ** (1.0 / beta)
        self._scripted_fail = sorted(e.at for e in events if e.device == device_id and e.kind == "lamp_fail")
        self.failed = False
        self.on = False
        self.dim = 1.0
        self.energy_wh = 0.0
        self._t = start
        self._power = params.standby_w
        self._pf = STANDBY_PF

    def set_output(self, t: float, on: bool, dim: float = 1.0) -> None:
        """The device switches the lamp at t (dim 0..1)."""
        self._advance(t)
        self.on = bool(on)
        self.dim = 0.0 if dim < 0.0 else 1.0 if dim > 1.0 else float(dim)
        self._set_power()

    def sample(self, t: float) -> LightSample:
        """Advance to t and return what the sensor and the meter face."""
        self._advance(t)
        p = self._p
        power, pf = self._power, self._pf
        flicker = False
        lumens = 0.0
        if self.on and not self.failed:
            lumens = p.rated_lm * max(self.dim, MIN_DIM) * math.exp(-self._alpha * self.age_h)
            to_failure = self.fail_age_h - self.age_h
            if to_failure < p.flicker_h and self._rng.random() < 1.0 - to_failure / p.flicker_h:
                flicker = True
                m = 0.1 + 0.8 * self._rng.random()
                power = p.standby_w + (power - p.standby_w) * m
                lumens *= m
        volt = p.mains_v * (1.0 + MAINS_VARIATION * (2.0 * self._mains(t) - 1.0)) * self._drop
        natural = self._sky.lux(t)
        lux = natural * self._shade + (self._spill if natural < NEIGHBOURS_ON_LUX else 0.0)
        s = LightSample(t, lux, self.on, self.dim, power, volt, power / (volt * pf) * 1000.0,
                        self.energy_wh, lumens, self.failed, flicker)
        if self._truth is not None:
            self._truth.light_sample(self.device_id, s)
        return s

    # --- internals --------------------------------------------------------------------------------
    def _set_power(self) -> None:
        self._power, self._pf = driver_input(self._p.rated_w, self._p.standby_w, self.on and not self.failed,
                                             self.dim)

    def _fail_now(self, t: float) -> None:
        if not self.failed:
            self.failed = True
            self._set_power()
            if self._truth is not None:
                self._truth.event(t, self.device_id, "lamp_fail")

    def _advance(self, t: float) -> None:
        """Integrate energy and operating hours to t, failing on the way if the lamp's time comes."""
        if t < self._t:
            raise ValueError(f"{self.device_id}: time went backwards ({t} < {self._t})")
        while self._scripted_fail and self._scripted_fail[0] <= t:
            at = max(self._scripted_fail.pop(0), self._t)
            self._integrate(at)
            self._fail_now(at)
        if self.on and not self.failed:
            wear_end = self._t + max(0.0, self.fail_age_h - self.age_h) * 3600.0
            if wear_end <= t:
                self._integrate(wear_end)
                self._fail_now(wear_end)
        self._integrate(t)

    def _integrate(self, t: float) -> None:
        dt = t - self._t
        if dt > 0.0:
            self.energy_wh += self._power * dt / 3600.0
            if self.on and not self.failed:
                self.age_h += dt / 3600.0
            self._t = t
