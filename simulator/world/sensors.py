"""Sensor faults seen in the field, as composable wrappers between a true value and what a device reads.

A `Sensor` is a chain of `Fault`s for one quantity of one device; `read(true_value, t)` passes the value
through each in order. A fault may change the value (a spike, a stuck value, noise) or raise a
`SensorError` (no echo, an I2C error), which the device layer turns into its board layer's error and the
firmware into an `alarm`/`sensor_fault` record. Each fault draws from its own seeded stream. Faults that
stand for an event (not plain noise) are written to the ground-truth log as `fault.<quantity>` lines.

The faults:
- `Spikes(rate, lo, hi)`: with probability `rate` per read the value is replaced by one uniform in
  [lo, hi] (an ultrasonic sensor catching a multipath or cross-talk echo).
- `Timeouts(rate)`: with probability `rate` per read, `NoEcho` (the echo never came back).
- `Stuck(per_day, mean_s)`: windows (Poisson starts, exponential lengths) during which the reading stays
  at the value it had when the window opened (a wet transducer, a frozen ADC).
- `BusErrors(rate)`: with probability `rate` per read, `BusError` (an I2C transaction NAKed or timed out).
- `Noise(sigma)`: Gaussian noise of standard deviation `sigma` (ADC and front-end noise).
"""

from __future__ import annotations

import random

from simulator.world.truth import TruthLog


class SensorError(Exception):
    """A read that returned no value. `fault` is the short name written to the ground truth."""

    fault = "error"


class NoEcho(SensorError):
    fault = "no_echo"


class BusError(SensorError):
    fault = "i2c_error"


class Fault:
    """One fault mechanism. `logged` faults are written to the ground truth when they alter a read."""

    name = "fault"
    logged = True

    def apply(self, value: float, t: float) -> float:
        raise NotImplementedError


class Spikes(Fault):
    name = "spike"

    def __init__(self, r: random.Random, rate: float, lo: float, hi: float) -> None:
        self._r, self._rate, self._lo, self._span = r, rate, lo, hi - lo

    def apply(self, value: float, t: float) -> float:
        r = self._r
        if r.random() < self._rate:
            return self._lo + self._span * r.random()
        return value


class Timeouts(Fault):
    name = "no_echo"

    def __init__(self, r: random.Random, rate: float) -> None:
        self._r, self._rate = r, rate

    def apply(self, value: float, t: float) -> float:
        if self._r.random() < self._rate:
            raise NoEcho()
        return value


class BusErrors(Fault):
    name = "i2c_error"

    def __init__(self, r: random.Random, rate: float) -> None:
        self._r, self._rate = r, rate

    def apply(self, value: float, t: float) -> float:
        if self._r.random() < self._rate:
            raise BusError()
        return value


class Stuck(Fault):
    name = "stuck"

    def __init__(self, r: random.Random, per_day: float, mean_s: float, start: float) -> None:
        if per_day <= 0.0 or mean_s <= 0.0:
            raise ValueError("Stuck needs per_day > 0 and mean_s > 0")
        self._r = r
        self._rate = per_day / 86400.0
        self._mean = mean_s
        self._start = start + r.expovariate(self._rate)
        self._end = self._start + r.expovariate(1.0 / mean_s)
        self._held: float | None = None

    def apply(self, value: float, t: float) -> float:
        while t >= self._end:  # windows that ended before this read
            self._start = self._end + self._r.expovariate(self._rate)
            self._end = self._start + self._r.expovariate(1.0 / self._mean)
            self._held = None
        if t < self._start:
            return value
        if self._held is None:
            self._held = value
        return self._held

    def stuck_at(self, t: float) -> bool:
        """Whether t falls in a stuck window (for tests and the demo's narration)."""
        return self._start <= t < self._end


class Noise(Fault):
    name = "noise"
    logged = False

    def __init__(self, r: random.Random, sigma: float) -> None:
        self._r, self._sigma = r, sigma

    def apply(self, value: float, t: float) -> float:
        return value + self._r.gauss(0.0, self._sigma)


class Sensor:
    """The fault chain in front of one quantity of one device."""

    __slots__ = ("device", "quantity", "faults", "_truth")

    def __init__(self, device: str, quantity: str, faults: list[Fault], truth: TruthLog | None = None) -> None:
        self.device = device
        self.quantity = quantity
        self.faults = tuple(faults)
        self._truth = truth

    def read(self, value: float, t: float) -> float:
        """What the device reads for a true value at t; raises `SensorError` when the read fails."""
        truth = self._truth
        for f in self.faults:
            try:
                out = f.apply(value, t)
            except SensorError as exc:
                if truth is not None:
                    truth.fault(t, self.device, self.quantity, exc.fault)
                raise
            if truth is not None and f.logged and out != value:
                truth.fault(t, self.device, self.quantity, f.name)
            value = out
        return value
