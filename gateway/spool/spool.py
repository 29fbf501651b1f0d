"""The spool as the event loop sees it: durable submit for ingest, cursors and reads for the batcher.

`await spool.submit(report, raw)` (or `submit_many` for all the reports of one read) returns only after
the report's group is committed (fsynced), so ingest may acknowledge the device (serial `ack`, MQTT
PUBACK) the moment it returns STORED or DUPLICATE. A crash before that loses nothing that was
acknowledged: the device or the broker still has the report and sends it again.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from gateway.spool.committer import Committer, SpoolError
from gateway.spool.config import SpoolConfig
from gateway.spool.health import Health
from gateway.spool.records import ROW_OVERHEAD, SubmitResult, encode_readings, has_alarm
from gateway.spool.reads import ReadMode, ReadResult, check_sqlite
from gateway.spool.store import Counters, Cursor, DeadLetter, Pending, SpoolStore
from gateway.wire.model import Reading, Report

T = TypeVar("T")

# (report, raw message, arrival_ns, time_s, time_estimated): a verified report whose time is settled
Submission = tuple[Report, bytes, int, float, bool]

# Boot number of the reports the gateway makes itself (e.g. `offline` alarms); devices count from 1.
GATEWAY_BOOT = 0

__all__ = ["Spool", "SpoolError", "SpoolStats", "Submission", "GATEWAY_BOOT"]


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot for the metrics collector."""

    bytes: int
    max_bytes: int
    reports: int
    alarm_reports: int
    pending: int
    last_id: int
    dedup_windows: int
    dead_letters: int
    delivered: dict[str, int]
    thinning: bool
    counters: Counters


class Spool:
    """Durable store between ingest and the sinks (see the package docstring for the guarantees)."""

    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self._committer: Committer | None = None
        self._store: SpoolStore | None = None
        self._pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._last_id = 0
        self._new_rows = asyncio.Event()

    async def open(self) -> None:
        """Start the committer thread; the database is created or recovered (WAL replay) here."""
        check_sqlite()
        self._committer = Committer(self.config, asyncio.get_running_loop(), self._on_done)
        self._store = await self._committer.start()
        self._last_id = self._store.last_id

    async def close(self) -> None:
        """Commit whatever was submitted, checkpoint and close the database."""
        if self._committer is not None:
            await self._committer.stop()

    async def __aenter__(self) -> Spool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- ingest side --------------------------------------------------------------------------

    def submit(self, report: Report, raw: bytes, *, arrival_ns: int | None = None,
               time_s: float | None = None, time_estimated: bool = False) -> Awaitable[SubmitResult]:
        """Store one verified report; the awaitable resolves once it is committed (or raises SpoolError:
        not stored). A batch of one (`submit_many`), queued at the call.

        `arrival_ns` is when ingest received it (gateway clock, default now). `time_s`/`time_estimated`
        are the report's time as the time stage settled it; by default the device's `time`, else the
        arrival time marked as estimated.
        """
        if arrival_ns is None:
            arrival_ns = time.time_ns()
        if time_s is None:
            if report.time is not None:
                time_s, time_estimated = float(report.time), False
            else:
                time_s, time_estimated = arrival_ns / 1e9, True
        return _only(self.submit_many([(report, raw, arrival_ns, time_s, time_estimated)]))

    def submit_many(self, batch: Sequence[Submission]) -> Awaitable[list[SubmitResult]]:
        """Store verified reports (a link's whole read); the awaitable resolves to their results, in order,
        once all of them are committed (in one transaction), or raises SpoolError: none stored.

        The batch is queued at the call, not at the first await, and the awaitable is a plain future
        (one per batch, no coroutine or task) unless `max_pending` reports are uncommitted, when it first
        waits for room; a batch admitted just under the bound may pass it by its own size.
        """
        items = [_pending(report.device, report.boot, report.seq, report.readings, raw, arrival_ns, time_s,
                          estimated, report.uptime)
                 for report, raw, arrival_ns, time_s, estimated in batch]
        if self._pending >= self.config.max_pending:
            return self._submit_when_room(items)
        return self._enqueue(items)

    async def _submit_when_room(self, items: list[Pending]) -> list[SubmitResult]:
        while self._pending >= self.config.max_pending:
            self._room.clear()
            await self._room.wait()
        return await self._enqueue(items)

    def _enqueue(self, items: list[Pending]) -> asyncio.Future[list[SubmitResult]]:
        future: asyncio.Future[list[SubmitResult]] = asyncio.get_running_loop().create_future()
        self._require().submit(items, future)
        self._pending += len(items)
        return future

    async def submit_local(self, device: str, readings: Sequence[Reading], time_s: float) -> int:
        """Store a report the gateway makes itself (boot 0, next seq of that device); returns its seq."""
        arrival_ns = time.time_ns()

        def op(store: SpoolStore) -> int:
            seq = store.dedup.next_seq(device, GATEWAY_BOOT)
            item = _pending(device, GATEWAY_BOOT, seq, readings, b"", arrival_ns, time_s, False, None)
            (result,) = store.insert([item])
            if result is not SubmitResult.STORED:
                raise SpoolError(f"gateway report for {device} not stored: {result.value}")
            return seq

        return await self._run(op)

    def _on_done(self, last_id: int | None, submits: int) -> None:
        self._pending -= submits
        if self._pending < self.config.max_pending:
            self._room.set()
        if last_id is not None and last_id != self._last_id:
            self._last_id = last_id
            self.wake()

    # --- batcher side -------------------------------------------------------------------------

    @property
    def instance(self) -> str:
        """This spool's random id, made with the database: part of every batch key."""
        if self._store is None:
            raise SpoolError("spool is not open")
        return self._store.instance

    @property
    def last_id(self) -> int:
        """The id of the newest committed report."""
        return self._last_id

    async def wait_for_rows(self, after: int) -> None:
        """Wait until a report with id > after is committed, or `wake` is called (callers re-check)."""
        if self._last_id <= after:
            await self._new_rows.wait()

    def wake(self) -> None:
        """Release every `wait_for_rows` now (e.g. to drain at shutdown)."""
        self._new_rows.set()
        self._new_rows = asyncio.Event()

    async def set_sinks(self, names: Sequence[str]) -> dict[str, Cursor]:
        return await self._run(lambda store: store.set_sinks(list(names)))

    async def read(self, after: int, max_records: int, max_bytes: int, *, until: int | None = None,
                   take_one: bool = True, mode: ReadMode = ReadMode.REPORTS) -> ReadResult:
        """Committed reports after a cursor, cut at the limits (see gateway.spool.reads)."""
        raw = await self._run(lambda store: store.read(mode, after, max_records, max_bytes, until=until,
                                                       take_one=take_one))
        return raw.decode()  # here, not in the database thread, which has commits to make

    async def begin_batch(self, sink: str, first: int, last: int) -> None:
        await self._run(lambda store: store.begin(sink, first, last))

    async def ack_batch(self, sink: str, last: int, key: str, dead: Sequence[DeadLetter] = (),
                        begin: tuple[int, int] | None = None) -> None:
        """The sink has everything up to `last`; `begin` persists the next batch's range in the same
        transaction (saving a commit per batch)."""

        def op(store: SpoolStore) -> None:
            store.ack(sink, last, key, list(dead))
            if begin is not None:
                store.begin(sink, *begin)

        await self._run(op)

    async def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(lambda store: store.dead_letters(sink, limit))

    async def _run(self, op: Callable[[SpoolStore], T]) -> T:
        return await self._require().run(op)

    def _require(self) -> Committer:
        if self._committer is None:
            raise SpoolError("spool is not open")
        return self._committer

    # --- observation --------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        store = self._store
        if store is None:
            raise SpoolError("spool is not open")
        return SpoolStats(bytes=store.bytes, max_bytes=self.config.max_bytes, reports=store.rows,
                          alarm_reports=store.alarm_rows, pending=self._pending, last_id=self._last_id,
                          dedup_windows=len(store.dedup), dead_letters=store.dead_letter_rows,
                          delivered={name: cur.delivered for name, cur in store.cursors.items()},
                          thinning=store.thinning, counters=store.counters)

    def health(self) -> Health:
        reasons = []
        store = self._store
        if store is None:
            return Health(("spool not open",))
        if store.thinning:
            c = store.counters
            reasons.append(f"spool at its bound of {self.config.max_bytes} bytes: {c.thinned_reports} routine "
                           f"reports thinned, {c.refused_full} refused (alarms kept)")
        assert self._committer is not None
        if self._committer.last_error is not None:
            reasons.append(f"spool commits failing: {self._committer.last_error}")
        return Health(tuple(reasons))


def _pending(device: str, boot: int, seq: int, readings: Sequence[Reading], raw: bytes, arrival_ns: int,
             time_s: float, time_estimated: bool, uptime: int | None) -> Pending:
    encoded = encode_readings(readings)
    # tuple.__new__ skips the named tuple's Python-level __new__: this runs for every report
    return _new_tuple(Pending, (device, boot, seq, arrival_ns, round(time_s * 1e6), time_estimated, uptime,
                                has_alarm(readings), len(readings), encoded, raw, len(encoded) + len(raw) + ROW_OVERHEAD))


_new_tuple = tuple.__new__


async def _only(batch: Awaitable[list[SubmitResult]]) -> SubmitResult:
    (result,) = await batch
    return result
