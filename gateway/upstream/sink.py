"""The one shape every sink has, and what a send can come to.

A sink renders a batch in its format and tries once; it classifies the outcome and leaves retrying
(backoff, jitter, Retry-After) to the batcher, so every sink retries the same way.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.spool import DeadLetter, ReadMode
from gateway.upstream.batch import Batch


class Outcome(enum.Enum):
    OK = "ok"  # the sink has the batch (minus the dead letters it names)
    RETRY = "retry"  # transient: send the same batch again later
    DEAD = "dead"  # refused for good: the batch goes to the dead-letter table, the cursor moves on


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None
    dead_letters: tuple[DeadLetter, ...] = ()

    @classmethod
    def ok(cls, dead_letters: tuple[DeadLetter, ...] = ()) -> SendResult:
        """Delivered; `dead_letters` are parts the receiver refused (e.g. entities of a 207)."""
        return cls(Outcome.OK, dead_letters=dead_letters)

    @classmethod
    def retry(cls, reason: str, after: float | None = None) -> SendResult:
        """Not delivered; `after` is the receiver's own wait (Retry-After) in seconds, if it gave one."""
        return cls(Outcome.RETRY, reason, retry_after=after)

    @classmethod
    def dead(cls, reason: str, detail: str, payload: str) -> SendResult:
        """Refused for good: `detail` is the receiver's answer, `payload` what was sent."""
        return cls(Outcome.DEAD, reason, dead_letters=(DeadLetter(reason, detail, payload),))


class Sink(Protocol):
    """An upstream destination. `name` is unique in the config and names the sink's cursor; `reads`
    says what its batches carry (Python reports, or reading objects the spool rendered as JSON)."""

    name: str
    reads: ReadMode

    async def start(self) -> None:
        """Open what the sink needs (sessions, files); connection failures surface in `send`."""

    async def send(self, batch: Batch) -> SendResult:
        """Try once to deliver the batch; never raise for a transient failure."""

    async def close(self) -> None:
        """Release connections and files."""
