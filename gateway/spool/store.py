"""The spool's database logic, run by the committer thread alone (one connection, one writer).

Every method works inside the transaction the committer opened; nothing here commits. The in-memory
mirrors (dedup index, byte count, cursors) change with the SQL they mirror and are rebuilt from the
database by `load` when a transaction is rolled back.
"""
from __future__ import annotations

import bisect
import functools
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

from gateway.spool import reads
from gateway.spool.config import SpoolConfig
from gateway.spool.dedup import DedupIndex
from gateway.spool.reads import RawRead, ReadMode
from gateway.spool.records import SubmitResult

log = logging.getLogger("gateway.spool")

_READ_CHUNK = 256
_COLUMNS = 13
# Rows per INSERT statement: one statement is one sqlite3_step, so the thread gives the GIL up (and has
# to win it back from the event loop) once per statement instead of once per row, and the per-row
# overhead of executemany goes. 13 * 512 bound values stay below SQLite's limit of 32766.
_ROWS_PER_INSERT = 512


class Pending(NamedTuple):
    """A report on its way into the spool, already encoded by `Spool.submit` (a tuple: it is made
    20,000 times a second, and its fields are the table's columns after the id, in order)."""

    device: str
    boot: int
    seq: int
    arrival_ns: int
    time_us: int
    time_estimated: bool
    uptime: int | None
    is_alarm: bool
    n: int
    readings: str
    raw: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """A sink's position: every report with id <= delivered is delivered; a batch covering
    (delivered, inflight_last] may be on its way (its key is made from that range)."""

    sink: str
    delivered: int
    inflight_first: int | None
    inflight_last: int | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Something a sink refused for good: the batch, or one entity of it, and why."""

    reason: str
    detail: str
    payload: str


@dataclass
class Counters:
    """Monotonic counts since the process started (exported as Prometheus counters)."""

    stored_reports: int = 0
    stored_readings: int = 0
    duplicates: int = 0
    refused_full: int = 0
    thinned_reports: int = 0
    thinned_readings: int = 0
    purged_reports: int = 0
    commits: int = 0
    commit_failures: int = 0
    dead_letters: int = 0
    dead_letters_dropped: int = 0
    dropped_by_sink: dict[str, int] = field(default_factory=dict)


class SpoolStore:
    """Reports, dedup state, sink cursors and dead letters in one SQLite database."""

    def __init__(self, conn: sqlite3.Connection, config: SpoolConfig) -> None:
        self.conn = conn
        self.config = config
        self.dedup = DedupIndex()
        self.counters = Counters()
        self.cursors: dict[str, Cursor] = {}
        self.last_id = 0
        self.instance = ""
        self.bytes = 0
        self.rows = 0
        self.alarm_rows = 0
        self.dead_letter_rows = 0
        self.thinning = False  # thinned or refused since the spool was last under recover_below
        self._thin_floor = 0  # every report with id <= this that is still stored is an alarm
        self._rows_to_insert: list[tuple[object, ...]] = []

    # --- state --------------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)build every in-memory mirror from the database."""
        c = self.conn
        self.last_id = c.execute("SELECT value FROM meta WHERE key='last_id'").fetchone()[0]
        self.instance = format(c.execute("SELECT value FROM meta WHERE key='instance'").fetchone()[0], "016x")
        self.bytes, self.rows, self.alarm_rows = c.execute(
            "SELECT coalesce(sum(size), 0), count(*), coalesce(sum(is_alarm), 0) FROM reports").fetchone()
        self.dedup.load(c.execute("SELECT device, boot, contiguous, above FROM dedup").fetchall(),
                        c.execute("SELECT device, floor FROM dedup_floor").fetchall())
        self.cursors = {row[0]: Cursor(*row) for row in c.execute(
            "SELECT sink, delivered, inflight_first, inflight_last FROM cursors")}
        self.dead_letter_rows = c.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        self._thin_floor = 0
        self._rows_to_insert.clear()

    @property
    def min_delivered(self) -> int | None:
        return min((cur.delivered for cur in self.cursors.values()), default=None)

    # --- reports in ---------------------------------------------------------------------------

    def insert(self, items: list[Pending]) -> list[SubmitResult]:
        """Admit a group of reports: duplicates are named, the byte bound is kept, the rest is stored."""
        results: list[SubmitResult] = []
        dedup = self.dedup
        limit = self.config.max_bytes
        rows = self._rows_to_insert
        stored = readings = alarms = 0
        for item in items:
            if self.bytes + item.size > limit:
                if dedup.seen(item.device, item.boot, item.seq):
                    results.append(SubmitResult.DUPLICATE)
                    continue
                self._flush_inserts()
                self._thin(self.bytes + item.size - int(limit * self.config.thin_to))
                if self.bytes + item.size > limit:
                    self._refuse_full()
                    results.append(SubmitResult.FULL)
                    continue
            if not dedup.accept(item.device, item.boot, item.seq):
                results.append(SubmitResult.DUPLICATE)
                continue
            self.last_id += 1
            rows.append((self.last_id, *item))
            self.bytes += item.size
            self.rows += 1
            stored += 1
            readings += item.n
            alarms += item.is_alarm
            results.append(SubmitResult.STORED)
        self._flush_inserts()
        self.alarm_rows += alarms
        counters = self.counters
        counters.stored_reports += stored
        counters.stored_readings += readings
        counters.duplicates += results.count(SubmitResult.DUPLICATE)
        self._write_dedup()
        self._check_recovered()
        return results

    def _check_recovered(self) -> None:
        if self.thinning and self.bytes < self.config.max_bytes * self.config.recover_below:
            self.thinning = False
            log.info("spool below %d%% of its bound again: no longer thinning",
                     int(self.config.recover_below * 100))

    def _flush_inserts(self) -> None:
        rows = self._rows_to_insert
        if not rows:
            return
        _insert_rows(self.conn, "INSERT INTO reports", _COLUMNS, rows)
        self.conn.execute("UPDATE meta SET value=? WHERE key='last_id'", (self.last_id,))
        rows.clear()

    def _write_dedup(self) -> None:
        dedup = self.dedup
        if dedup.changed:
            rows = []
            for device, boot in dedup.changed:
                window = dedup.window(device, boot)
                if window is not None:
                    rows.append((device, boot, window.contiguous, window.encode_above()))
            _insert_rows(self.conn, "INSERT OR REPLACE INTO dedup", 4, rows)
        if dedup.forgotten:
            self.conn.executemany("DELETE FROM dedup WHERE device=? AND boot=?", dedup.forgotten)
        if dedup.floors_changed:
            self.conn.executemany("INSERT OR REPLACE INTO dedup_floor VALUES (?,?)",
                                  [(d, dedup.floor(d)) for d in dedup.floors_changed])
        dedup.clear_changes()

    def _refuse_full(self) -> None:
        self.counters.refused_full += 1
        if not self.thinning:
            log.warning("spool full of alarms (%d bytes, bound %d): refusing reports until sinks catch up",
                        self.bytes, self.config.max_bytes)
        self.thinning = True

    def _thin(self, need: int) -> None:
        """Delete the oldest routine reports until `need` bytes are free; alarms stay.

        Each sink that had not yet been sent a thinned report counts it as dropped for that sink.
        """
        ids: list[int] = []
        readings: list[int] = []
        freed = 0
        after = max(self._thin_floor, self.min_delivered or 0)
        while freed < need:
            chunk = self.conn.execute(
                "SELECT id, size, n FROM reports WHERE id > ? AND is_alarm = 0 ORDER BY id LIMIT ?",
                (after, _READ_CHUNK)).fetchall()
            if not chunk:
                break
            for row_id, size, n in chunk:
                ids.append(row_id)
                readings.append(n)
                freed += size
                if freed >= need:
                    break
            after = ids[-1]
        if not ids:
            return
        self.conn.execute("DELETE FROM reports WHERE id >= ? AND id <= ? AND is_alarm = 0", (ids[0], ids[-1]))
        self._thin_floor = ids[-1]
        self.bytes -= freed
        self.rows -= len(ids)
        total_readings = sum(readings)
        self.counters.thinned_reports += len(ids)
        self.counters.thinned_readings += total_readings
        for cursor in self.cursors.values():
            sent = max(cursor.delivered, cursor.inflight_last or 0)
            dropped = len(ids) - bisect.bisect_right(ids, sent)
            if dropped:
                by_sink = self.counters.dropped_by_sink
                by_sink[cursor.sink] = by_sink.get(cursor.sink, 0) + dropped
        log.warning("spool at its bound (%d bytes): thinned %d oldest routine reports (%d readings), ids %d..%d",
                    self.config.max_bytes, len(ids), total_readings, ids[0], ids[-1])
        self.thinning = True

    # --- sinks --------------------------------------------------------------------------------

    def set_sinks(self, names: list[str]) -> dict[str, Cursor]:
        """Make the configured sinks the only ones that hold reports back.

        A new sink starts at the oldest report still stored; a sink no longer configured loses its
        cursor, else the reports it never took would stay forever.
        """
        for gone in set(self.cursors) - set(names):
            self.conn.execute("DELETE FROM cursors WHERE sink=?", (gone,))
            del self.cursors[gone]
            log.info("sink %s is no longer configured: its cursor is removed", gone)
        start = self.conn.execute("SELECT coalesce(min(id), ?) - 1 FROM reports", (self.last_id + 1,)).fetchone()[0]
        for name in names:
            if name not in self.cursors:
                self.conn.execute("INSERT INTO cursors VALUES (?,?,NULL,NULL)", (name, start))
                self.cursors[name] = Cursor(name, start, None, None)
        self.purge_delivered()
        return dict(self.cursors)

    def read(self, mode: ReadMode, after: int, max_records: int, max_bytes: int, *, until: int | None = None,
             take_one: bool = True) -> RawRead:
        """Reports after `after` (up to `until`, default the newest) for a batch (gateway.spool.reads)."""
        bound = self.last_id if until is None else min(until, self.last_id)
        return reads.read(self.conn, mode, after, bound, max_records, max_bytes, take_one)

    def begin(self, sink: str, first: int, last: int) -> None:
        """Persist the range of a batch before it is first sent, so a restart resends it under the same key."""
        cur = self.cursors[sink]
        self.conn.execute("UPDATE cursors SET inflight_first=?, inflight_last=? WHERE sink=?", (first, last, sink))
        self.cursors[sink] = Cursor(sink, cur.delivered, first, last)

    def ack(self, sink: str, last: int, key: str, dead: list[DeadLetter]) -> None:
        """The sink has everything up to `last` (dead letters included): move its cursor, drop what
        every sink has."""
        self.conn.execute("UPDATE cursors SET delivered=?, inflight_first=NULL, inflight_last=NULL WHERE sink=?",
                          (last, sink))
        self.cursors[sink] = Cursor(sink, last, None, None)
        if dead:
            self._add_dead_letters(sink, key, dead)
        self.purge_delivered()

    def purge_delivered(self) -> None:
        upto = self.min_delivered
        if upto is None:
            return
        size, count, alarms = self.conn.execute(
            "SELECT coalesce(sum(size), 0), count(*), coalesce(sum(is_alarm), 0) FROM reports WHERE id <= ?",
            (upto,)).fetchone()
        if count:
            self.conn.execute("DELETE FROM reports WHERE id <= ?", (upto,))
            self.bytes -= size
            self.rows -= count
            self.alarm_rows -= alarms
            self.counters.purged_reports += count
            self._check_recovered()

    # --- dead letters -------------------------------------------------------------------------

    def _add_dead_letters(self, sink: str, key: str, dead: list[DeadLetter]) -> None:
        cut = self.config.dead_letter_bytes
        now = time.time_ns()
        self.conn.executemany(
            "INSERT INTO dead_letters(sink, batch_key, created_ns, reason, detail, payload) VALUES (?,?,?,?,?,?)",
            [(sink, key, now, d.reason, d.detail[:cut], d.payload[:cut]) for d in dead])
        self.counters.dead_letters += len(dead)
        self.dead_letter_rows += len(dead)
        excess = self.dead_letter_rows - self.config.max_dead_letters
        if excess > 0:
            self.conn.execute("DELETE FROM dead_letters WHERE id IN "
                              "(SELECT id FROM dead_letters ORDER BY id LIMIT ?)", (excess,))
            self.dead_letter_rows -= excess
            self.counters.dead_letters_dropped += excess
            log.warning("dead-letter table at its bound (%d): dropped the %d oldest",
                        self.config.max_dead_letters, excess)

    def dead_letters(self, sink: str | None, limit: int) -> list[dict[str, object]]:
        """The newest dead letters, newest first (for the HTTP API and the technician)."""
        query = "SELECT id, sink, batch_key, created_ns, reason, detail, payload FROM dead_letters"
        args: tuple[object, ...] = ()
        if sink is not None:
            query += " WHERE sink=?"
            args = (sink,)
        rows = self.conn.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        names = ("id", "sink", "batch_key", "created_ns", "reason", "detail", "payload")
        return [dict(zip(names, row)) for row in rows]


def _insert_rows(conn: sqlite3.Connection, insert: str, columns: int, rows: Sequence[tuple[object, ...]]) -> None:
    """`insert` ("INSERT INTO t") for many rows, in multi-row statements of a power-of-two number of rows
    (53 rows: 32 + 16 + 4 + 1). Groups come in every size; a statement per size would have SQLite parse
    and plan a new statement for most of them (the connection caches 128), while ten sizes per table
    stay prepared: about 1 us per report less with group sizes spread over 1..150."""
    start, count = 0, len(rows)
    while start < count:
        size = min(_ROWS_PER_INSERT, 1 << ((count - start).bit_length() - 1))
        chunk = rows[start:start + size]
        conn.execute(_values_sql(insert, columns, size), [value for row in chunk for value in row])
        start += size


@functools.lru_cache(maxsize=32)  # ten sizes for each of the two tables written this way
def _values_sql(insert: str, columns: int, rows: int) -> str:
    return f"{insert} VALUES " + ",".join(["(" + ",".join("?" * columns) + ")"] * rows)
