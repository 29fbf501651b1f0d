"""Step 4 of the pipeline: one loop per sink that cuts batches from the spool and delivers them in order.

Each sink has its own cursor in the spool. Its loop reads committed reports after the cursor as they
are committed, closes the batch at a record count, a byte size or a time window after the oldest
report's arrival, persists the batch's range (so its key survives a restart), sends it and retries it
with backoff until the sink takes it or refuses it for good, and only then moves the cursor. One batch
per sink is in flight at a time, which keeps delivery in spool order. A slow sink holds back only
itself; the spool keeps a report until every sink has it.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Sequence

from gateway.spool import Cursor, DeadLetter, Health, Spool, StoredReport
from gateway.upstream.backoff import RetryPolicy
from gateway.upstream.batch import Batch, BatchConfig, batch_key
from gateway.upstream.sink import Outcome, SendResult, Sink

log = logging.getLogger("gateway.upstream")

# Upper bounds (seconds) of the arrival-to-upstream latency histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.35, 0.4, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
                   60.0, 300.0)  # 0.3-0.4: around the budget (the default 0.25 s window + 100 ms)


@dataclass
class LatencyHistogram:
    """Arrival-to-upstream latency per report, counted into fixed buckets (cheap at 20,000/s)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile q (inf past the last bucket)."""
        rank = q * self.n
        seen = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts):
            seen += count
            if seen >= rank and count:
                return bound
        return 0.0


@dataclass
class SinkStats:
    """Counts since start, per sink (exported by gateway.upstream.metrics)."""

    batches: int = 0
    reports: int = 0
    records: int = 0
    retries: int = 0
    dead_batches: int = 0
    dead_letters: int = 0
    failing_since: float | None = None  # monotonic time of the first failure of the current batch
    last_error: str | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True)
class SinkSpec:
    """A configured sink with its batching and retry settings."""

    sink: Sink
    batch: BatchConfig = BatchConfig()
    retry: RetryPolicy = RetryPolicy()


class SinkRunner:
    """The delivery loop of one sink."""

    def __init__(self, spool: Spool, spec: SinkSpec, rng: random.Random) -> None:
        self.spool = spool
        self.sink = spec.sink
        self.name = spec.sink.name
        self.batch_config = spec.batch
        self.retry = spec.retry
        self.stats = SinkStats()
        self.delivered = 0
        self._rng = rng
        self._drain_to: int | None = None

    def drain(self, upto: int) -> None:
        """Close batches at once, and stop after delivering everything up to `upto`."""
        self._drain_to = upto

    async def run(self, cursor: Cursor) -> None:
        self.delivered = cursor.delivered
        if cursor.inflight_first is not None and cursor.inflight_last is not None:
            await self._deliver(await self._resume(cursor.inflight_first, cursor.inflight_last), None, begun=True)
        # The next batch gathers (reads, waits for its window) while the current one is on the wire, so
        # the round trip to the platform does not stall the pipeline; sending stays one batch at a time.
        upcoming = asyncio.create_task(self._collect(self.delivered))
        begun = False
        try:
            while True:
                batch = await upcoming
                if batch is None:
                    return
                upcoming = asyncio.create_task(self._collect(batch.last))
                begun = await self._deliver(batch, upcoming, begun=begun)
        finally:
            upcoming.cancel()

    async def _resume(self, first: int, last: int) -> Batch:
        """The batch that was in flight when the gateway stopped, under its old key."""
        read = await self.spool.read(self.delivered, 1 << 62, 1 << 62, until=last, mode=self.sink.reads)
        log.info("sink %s: resending batch %d..%d that was in flight at the last stop", self.name, first, last)
        return Batch(batch_key(self.spool.instance, self.name, first, last), self.name, first, last,
                     self.sink.reads, read.arrivals, read.records, read.reports, (read.text,))

    def _drained(self, upto: int) -> bool:
        return self._drain_to is not None and (upto >= self._drain_to or upto >= self.spool.last_id)

    async def _collect(self, after: int) -> Batch | None:
        """Read reports after `after` until the batch is full or its window is over; None once drained."""
        cfg = self.batch_config
        spool = self.spool
        mode = self.sink.reads
        upto = after
        reports: list[StoredReport] = []
        parts: list[str] = []
        arrivals: list[int] = []
        records = nbytes = 0
        deadline: float | None = None
        while not self._drained(upto):
            if spool.last_id > upto:
                read = await spool.read(upto, cfg.max_records - records, cfg.max_bytes - nbytes,
                                        take_one=not arrivals, mode=mode)
                reports.extend(read.reports)
                parts.append(read.text)
                arrivals.extend(read.arrivals)
                records += read.records
                nbytes += read.nbytes
                upto = read.upto
                if deadline is None and arrivals:
                    deadline = arrivals[0] / 1e9 + cfg.window_s
                if read.full or self._drained(upto):
                    break
            if deadline is not None:
                remaining = min(deadline - time.time(), cfg.window_s)
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(spool.wait_for_rows(upto), remaining)
                except TimeoutError:
                    break
            elif upto > after:
                break  # only thinned-away reports: move the cursor past them
            else:
                await spool.wait_for_rows(upto)
        if upto == after:
            return None
        return Batch(batch_key(spool.instance, self.name, after + 1, upto), self.name, after + 1, upto, mode,
                     tuple(arrivals), records, tuple(reports), tuple(parts))

    async def _deliver(self, batch: Batch, upcoming: asyncio.Task[Batch | None] | None, *, begun: bool) -> bool:
        """Send until the sink takes or refuses the batch, then move the cursor past it.

        A batch's range is persisted before its first send (`begun`); when the next batch is already
        gathered, its range is persisted in the same transaction that moves the cursor, and True says so.
        """
        if batch.count:
            if not begun:
                await self.spool.begin_batch(self.name, batch.first, batch.last)
            result = await self._send(batch)
            self._count(batch, result)
            dead = result.dead_letters
        else:
            dead = ()  # every report in the range was thinned away: nothing to send
        following = _ready(upcoming)
        begin = (following.first, following.last) if following is not None and following.count else None
        await self.spool.ack_batch(self.name, batch.last, batch.key, dead, begin=begin)
        self.delivered = batch.last
        return begin is not None

    async def _send(self, batch: Batch) -> SendResult:
        """Send until the outcome is not RETRY, waiting the backoff between attempts."""
        attempt = 0
        while True:
            result = await self._send_once(batch)
            if result.outcome is not Outcome.RETRY:
                return result
            delay = self.retry.delay(attempt, result.retry_after, self._rng)
            attempt += 1
            self.stats.retries += 1
            self.stats.last_error = result.reason
            if self.stats.failing_since is None:
                self.stats.failing_since = time.monotonic()
            log.warning("sink %s: batch %s (%d reports) not delivered (%s); attempt %d again in %.2f s",
                        self.name, batch.key[:12], batch.count, result.reason, attempt + 1, delay)
            await asyncio.sleep(delay)

    async def _send_once(self, batch: Batch) -> SendResult:
        try:
            return await self.sink.send(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a sink bug must not stop delivery; it is retried
            log.exception("sink %s raised while sending batch %s", self.name, batch.key[:12])
            return SendResult.retry(f"sink error: {exc!r}")

    def _count(self, batch: Batch, result: SendResult) -> None:
        stats = self.stats
        stats.failing_since = None
        stats.last_error = None
        dead: Sequence[DeadLetter] = result.dead_letters
        if result.outcome is Outcome.DEAD:
            stats.dead_batches += 1
            log.error("sink %s refused batch %s for good (%s): %d reports moved to the dead letters",
                      self.name, batch.key[:12], result.reason, batch.count)
        else:
            stats.batches += 1
            stats.reports += batch.count
            stats.records += batch.records
            if dead:
                log.error("sink %s refused %d parts of batch %s: moved to the dead letters (first: %s)",
                          self.name, len(dead), batch.key[:12], dead[0].reason)
        stats.dead_letters += len(dead)
        now = time.time_ns()
        observe = stats.latency.observe
        for arrival_ns in batch.arrivals:
            observe((now - arrival_ns) / 1e9)

    def health(self) -> Health:
        since = self.stats.failing_since
        if since is not None and time.monotonic() - since >= self.retry.degraded_after_s:
            return Health((f"sink {self.name} failing for {time.monotonic() - since:.0f} s: {self.stats.last_error}",))
        return Health()


def _ready(task: asyncio.Task[Batch | None] | None) -> Batch | None:
    """The task's batch if it is already gathered."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


class Upstream:
    """All configured sinks, each in its own delivery loop over the shared spool."""

    def __init__(self, spool: Spool, specs: Sequence[SinkSpec], rng: random.Random | None = None) -> None:
        names = [spec.sink.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        self.spool = spool
        rng = rng or random.Random()
        self.runners = [SinkRunner(spool, spec, rng) for spec in specs]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Register the sinks' cursors (dropping sinks no longer configured) and start the loops."""
        cursors = await self.spool.set_sinks([r.name for r in self.runners])
        for runner in self.runners:
            await runner.sink.start()
        for runner in self.runners:
            task = asyncio.create_task(runner.run(cursors[runner.name]), name=f"sink-{runner.name}")
            task.add_done_callback(self._loop_ended)
            self._tasks.append(task)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery loop %s stopped: %r", task.get_name(), task.exception())

    async def drain(self, timeout: float) -> bool:
        """Deliver everything committed so far, within `timeout`; True when every sink got it all."""
        target = self.spool.last_id
        for runner in self.runners:
            runner.drain(target)
        self.spool.wake()
        done, pending = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else (set(), set())
        if pending:
            log.warning("upstream drain: %d sinks not drained within %.1f s; their batches stay in the spool",
                        len(pending), timeout)
        await self.stop()
        return not pending

    async def stop(self) -> None:
        """Stop the loops (a batch in flight keeps its range and key for the next start); close sinks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for runner in self.runners:
            try:
                await runner.sink.close()
            except Exception:  # noqa: BLE001 - closing one sink must not keep the others open
                log.exception("sink %s failed to close", runner.name)

    def health(self) -> Health:
        health = Health()
        for runner in self.runners:
            health = health + runner.health()
        for task in self._tasks:
            if task.done() and not task.cancelled():
                health = health + Health((f"delivery loop {task.get_name()} stopped",))
        return health
