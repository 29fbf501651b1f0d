"""A component's health as `/healthz` shows it: ok, or degraded with the reasons."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Health:
    reasons: tuple[str, ...] = ()

    @property
    def degraded(self) -> bool:
        return bool(self.reasons)

    def __add__(self, other: Health) -> Health:
        return Health(self.reasons + other.reasons)
