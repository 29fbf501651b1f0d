"""Seeded randomness for the world: one stream per (scenario seed, names), never the global generator.

Why: the world must be a pure function of (seed, scenario, simulated time, sequence of calls). Each model
draws from its own `random.Random`, so adding a device or a model never shifts another one's numbers.
Slow noise (clouds, day-to-day variation) is a hash of (key, index), so its value at a time does not
depend on how often, or in which order, it was sampled.
"""

from __future__ import annotations

import hashlib
import math
import random

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_INV_2_53 = 1.0 / (1 << 53)


def derive_key(seed: int, *names: str) -> int:
    """A 64-bit key from the scenario seed and names (device id, model): stable across runs and hosts."""
    text = "\x1f".join((str(seed),) + names).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def stream(seed: int, *names: str) -> random.Random:
    """The private random stream of one model, e.g. ``stream(seed, "bin-0001", "events")``."""
    return random.Random(derive_key(seed, *names))


def unit(key: int, index: int) -> float:
    """A uniform number in [0, 1) that depends only on (key, index): the splitmix64 finaliser."""
    z = (key + (index + 1) * _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) * _INV_2_53


class SlowNoise:
    """Smooth noise in [0, 1): hashed knots every `period_s` seconds, smoothstep-interpolated between them.

    A pure function of time (no state but a one-knot cache), so two devices reading the same site's
    clouds at the same instant see the same sky whatever else they sampled before.
    """

    __slots__ = ("_key", "_period", "_knot", "_a", "_b")

    def __init__(self, key: int, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self._key = key
        self._period = float(period_s)
        self._knot: int | None = None
        self._a = 0.0
        self._b = 0.0

    def __call__(self, t: float) -> float:
        x = t / self._period
        k = math.floor(x)
        if k != self._knot:
            self._knot = k
            self._a = unit(self._key, k)
            self._b = unit(self._key, k + 1)
        f = x - k
        return self._a + (self._b - self._a) * (f * f * (3.0 - 2.0 * f))
