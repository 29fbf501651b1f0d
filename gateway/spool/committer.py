"""Group commit: one thread owns the database and turns bursts of submits into single transactions.

The event loop hands reports over through a locked list, a batch at a time (all the reports of one
socket read), with one future per batch. The thread takes every batch waiting (after at most
`group_wait_s` since the first of them, or as soon as `group_max` reports are there), writes them in one
transaction, COMMITs (one fsync of the WAL under synchronous=FULL) and only then resolves the futures,
each with its batch's results in order, with one call into the loop per group. Batches are never split:
a group takes whole batches up to `group_max` reports, or one batch alone when that batch is larger.
While the disk is busy with one fsync the next group gathers, so under load the groups grow by
themselves.

Other database work (batch reads, cursor moves) travels as operations in the same queue and runs in the
same transactions, before the group's inserts, so it sees only committed reports.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from typing import Any, Callable, TypeVar

from gateway.spool.config import SpoolConfig
from gateway.spool.records import SubmitResult
from gateway.spool.schema import connect
from gateway.spool.store import Pending, SpoolStore

log = logging.getLogger("gateway.spool")

T = TypeVar("T")
Operation = Callable[[SpoolStore], Any]
# reports handed over together, and the future their results (a list, in order) go to
Batch = tuple[list[Pending], asyncio.Future[list[SubmitResult]]]


class SpoolError(RuntimeError):
    """The spool could not commit; the reports of the failed group were not stored."""


class Committer:
    """The database thread and the queue in front of it."""

    def __init__(self, config: SpoolConfig, loop: asyncio.AbstractEventLoop,
                 on_done: Callable[[int | None, int], None]) -> None:
        self._config = config
        self._loop = loop
        self._on_done = on_done
        self._cond = threading.Condition(threading.Lock())
        self._submits: list[Batch] = []
        self._queued = 0  # reports in `_submits`
        self._first_at = 0.0
        self._ops: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="spool-committer", daemon=True)
        self._opened: asyncio.Future[None] = loop.create_future()
        self.store: SpoolStore | None = None
        self.last_error: str | None = None

    async def start(self) -> SpoolStore:
        self._thread.start()
        await self._opened
        assert self.store is not None
        return self.store

    def submit(self, items: list[Pending], future: asyncio.Future[list[SubmitResult]]) -> None:
        """Queue a batch; `future` gets its results, in order, once the group holding it is committed."""
        with self._cond:
            if self._closing:
                raise SpoolError("spool is closed")
            before = self._queued
            if not before:
                self._first_at = time.monotonic()
            self._submits.append((items, future))
            self._queued = before + len(items)
            # Wake the thread only when it has something to do: the first batch of a group (it waits
            # for work) or a full group (it waits for the group to fill or its time to pass). A wake per
            # batch would have it take the GIL from the event loop for nothing.
            group_max = self._config.group_max
            if not before or before < group_max <= self._queued:
                self._cond.notify()

    def run(self, op: Callable[[SpoolStore], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        with self._cond:
            if self._closing:
                raise SpoolError("spool is closed")
            self._ops.append((op, future))
            self._cond.notify()
        return future

    async def stop(self) -> None:
        """Commit what is queued, then close the database."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = connect(self._config.path)
            store = SpoolStore(conn, self._config)
            store.load()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting loop
            self._loop.call_soon_threadsafe(self._fail_open, exc)
            return
        self.store = store
        self._loop.call_soon_threadsafe(self._opened.set_result, None)
        try:
            while True:
                submits, ops = self._take()
                if not submits and not ops:
                    break
                self._transaction(store, submits, ops)
        finally:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("spool checkpoint at close failed: %s", exc)
            conn.close()

    def _fail_open(self, exc: BaseException) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)

    def _take(self) -> tuple[list[Batch], list[tuple[Operation, asyncio.Future[Any]]]]:
        """Wait for work; gather a group; return it (both empty only when closing with nothing left)."""
        group_max = self._config.group_max
        with self._cond:
            while not self._submits and not self._ops and not self._closing:
                self._cond.wait()
            deadline = self._first_at + self._config.group_wait_s
            while (self._submits and not self._ops and not self._closing
                   and self._queued < group_max):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = count = 0
            for items, _ in self._submits:
                if taken and count + len(items) > group_max:
                    break
                taken += 1
                count += len(items)
            submits = self._submits[:taken]
            del self._submits[:taken]
            self._queued -= count
            if self._submits:
                self._first_at = time.monotonic()
            ops, self._ops = self._ops, []
        return submits, ops

    def _transaction(self, store: SpoolStore, submits: list[Batch],
                     ops: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        op_results: list[tuple[bool, Any]] = []
        try:
            store.conn.execute("BEGIN")
            for op, _ in ops:
                try:
                    op_results.append((True, op(store)))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bad operation fails alone
                    op_results.append((False, exc))
            results = store.insert([item for items, _ in submits for item in items]) if submits else []
            store.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(store, exc)
            error = SpoolError(f"spool commit failed: {exc}")
            self._loop.call_soon_threadsafe(self._fail, [f for _, f in submits] + [f for _, f in ops], error,
                                            sum(len(items) for items, _ in submits))
            return
        store.counters.commits += 1
        self.last_error = None
        self._loop.call_soon_threadsafe(self._resolve, submits, results, ops, op_results, store.last_id)

    def _rollback(self, store: SpoolStore, exc: sqlite3.Error) -> None:
        store.counters.commit_failures += 1
        self.last_error = str(exc)
        log.error("spool transaction failed, nothing of it is stored: %s", exc)
        try:
            if store.conn.in_transaction:
                store.conn.execute("ROLLBACK")
            store.load()
        except sqlite3.Error as again:
            log.error("spool reload after a failed transaction failed too: %s", again)

    def _resolve(self, submits: list[Batch], results: list[SubmitResult],
                 ops: list[tuple[Operation, asyncio.Future[Any]]], op_results: list[tuple[bool, Any]],
                 last_id: int) -> None:
        start = 0
        for items, future in submits:
            end = start + len(items)
            if not future.done():
                future.set_result(results[start:end])
            start = end
        for (_, future), (ok, value) in zip(ops, op_results):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._on_done(last_id, start)

    def _fail(self, futures: list[asyncio.Future[Any]], error: Exception, submits: int) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._on_done(None, submits)
