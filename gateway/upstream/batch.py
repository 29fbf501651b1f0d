"""A batch: the reports a sink gets in one request, and the key that names it across retries.

The key is a hash of the spool's instance id, the sink's name and the batch's id range in the spool.
The range is persisted before the first send, so a retry, in this process or after a restart, carries
the same key, and the platform can drop a batch it has already applied. The instance id keeps two
gateways posting to one platform from ever making the same key.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from gateway.spool import ReadMode, StoredReport


@dataclass(frozen=True)
class BatchConfig:
    """When a batch closes: at `max_records` readings, at `max_bytes` of readings (their compact JSON,
    a lower bound of the uncompressed body), or `window_s` after its oldest report arrived."""

    max_records: int = 2000
    max_bytes: int = 1024 * 1024
    window_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1 or not 0 <= self.window_s <= 3600:
            raise ValueError("batch needs max_records >= 1, max_bytes >= 1, 0 <= window_s <= 3600")


def batch_key(instance: str, sink: str, first: int, last: int) -> str:
    return hashlib.sha256(f"{instance}\x00{sink}\x00{first}\x00{last}".encode()).hexdigest()


@dataclass(frozen=True)
class Batch:
    """Reports with spool ids in first..last (ids thinned away inside the range are simply absent).

    What a batch holds depends on the sink's `reads` mode: `reports` (ReadMode.REPORTS), or `parts`,
    the upstream reading objects as JSON text, rendered by the spool (ReadMode.JSON: comma-separated,
    ReadMode.LINES: one per line), one part per read that made the batch. `arrivals` has every report's
    arrival time (gateway clock, ns) whatever the mode.
    """

    key: str
    sink: str
    first: int
    last: int
    mode: ReadMode
    arrivals: tuple[int, ...]
    records: int
    reports: tuple[StoredReport, ...] = ()
    parts: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        """Reports in the batch."""
        return len(self.arrivals)

    def objects_text(self) -> str:
        """The reading objects as one text, separated as the mode says (JSON or LINES batches)."""
        return ("," if self.mode is ReadMode.JSON else "\n").join(part for part in self.parts if part)
