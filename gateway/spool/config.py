"""The spool's settings (the `[spool]` table of the gateway config maps onto these fields)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SpoolConfig:
    """Where the spool lives and what bounds it.

    - `max_bytes`: the byte bound on stored reports (readings + raw message + a fixed row overhead).
      Reaching it thins the oldest routine reports down to `thin_to` of the bound; alarms are kept.
      The database file is larger by SQLite's page slack and indexes (about 1.5x at the bound).
    - `group_max` / `group_wait_s`: a commit takes every report waiting, at most `group_max`, and waits
      at most `group_wait_s` after the first of them for more, so the disk sees one fsync per group.
    - `max_pending`: reports submitted but not yet committed; past it `submit` waits for the committer
      (backpressure reaches ingest instead of memory growing).
    - `recover_below`: the fraction of the bound under which a thinned spool reports healthy again.
    - `max_dead_letters`: dead letters kept (oldest dropped first, counted); `dead_letter_bytes`
      truncates each one's payload and response: 4 MiB holds a whole default batch (1 MiB of readings
      renders to about 3 MiB of JSON); the worst case, 1000 full batches refused, is 4 GB.
    """

    path: Path
    max_bytes: int = 256 * 1024 * 1024
    group_max: int = 4096
    group_wait_s: float = 0.002
    max_pending: int = 65536
    thin_to: float = 0.9
    recover_below: float = 0.8
    max_dead_letters: int = 1000
    dead_letter_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_bytes < 64 * 1024:
            raise ValueError("spool max_bytes must be at least 65536")
        if not 0 < self.recover_below <= self.thin_to < 1:
            raise ValueError("spool needs 0 < recover_below <= thin_to < 1")
        if self.group_max < 1 or self.max_pending < 1 or self.max_dead_letters < 1:
            raise ValueError("spool group_max, max_pending and max_dead_letters must be >= 1")
        if not 0 <= self.group_wait_s <= 1:
            raise ValueError("spool group_wait_s must be within 0..1 s")
