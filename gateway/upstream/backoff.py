"""How long the batcher waits before sending a refused batch again."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits initial_s * multiplier**n, capped at max_s, minus
    a random share of up to `jitter` of it, so gateways that failed together do not retry together.
    A receiver's Retry-After is honoured as given, up to `max_retry_after_s`.
    `degraded_after_s`: how long a sink may keep failing before health reports it."""

    initial_s: float = 0.5
    max_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_retry_after_s: float = 900.0
    degraded_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s and self.multiplier >= 1 and 0 <= self.jitter <= 1
                and self.max_retry_after_s >= 0 and self.degraded_after_s >= 0):
            raise ValueError("retry needs 0 < initial_s <= max_s, multiplier >= 1, 0 <= jitter <= 1")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return base * (1 - self.jitter * rng.random())
