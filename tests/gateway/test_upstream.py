"""The batcher: when batches close, per-sink cursors that survive restarts without resending, the same
key for a batch resent after a restart, reports leaving the spool only when every sink has them,
draining at shutdown, health."""
from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.spool.metrics import spool_collector
from gateway.upstream import BatchConfig, RetryPolicy, SinkSpec, Upstream
from gateway.upstream.batch import batch_key
from gateway.upstream.httpclient import HttpEndpoint
from gateway.upstream.http import HttpSink, HttpSinkConfig
from gateway.upstream.jsonl import JsonlSink, JsonlSinkConfig
from gateway.upstream.metrics import upstream_collector
from tests.harness.platform import Answer, Platform
from tests.harness.reports import bin_report
from tests.harness.upstream import FAST_RETRY, delivered_all, eventually, open_spool, running

RAW = b"cose message"


def http(name: str, url: str, batch: BatchConfig, retry: RetryPolicy = FAST_RETRY) -> SinkSpec:
    return SinkSpec(HttpSink(HttpSinkConfig(name, HttpEndpoint(url), gzip_level=0)), batch, retry)


def seqs(platform: Platform) -> list[list[int]]:
    """Per accepted request, the seqs of the reports in it."""
    out = []
    for req in platform.accepted():
        batch: list[int] = []
        for reading in req.json()["readings"]:
            if not batch or batch[-1] != reading["seq"]:
                batch.append(reading["seq"])
        out.append(batch)
    return out


@pytest.fixture
async def spool(tmp_path: Path):  # noqa: ANN201
    async with open_spool(tmp_path) as spool:
        yield spool


async def test_a_batch_closes_at_its_record_count_without_waiting_for_the_window(spool: Spool) -> None:
    for seq in range(1, 7):
        await spool.submit(bin_report("bin-0042", 1, seq), RAW)
    async with Platform() as platform:
        async with running(spool, [http("h", platform.url, BatchConfig(max_records=8, window_s=3600))]):
            await delivered_all(spool)
    assert seqs(platform) == [[1, 2], [3, 4], [5, 6]]


async def test_a_batch_closes_at_its_byte_size(spool: Spool) -> None:
    for seq in range(1, 7):
        await spool.submit(bin_report("bin-0042", 1, seq), RAW)
    one = (await spool.read(0, 4, 1 << 20)).nbytes
    async with Platform() as platform:
        async with running(spool, [http("h", platform.url, BatchConfig(max_bytes=3 * one, window_s=3600))]):
            await delivered_all(spool)
    assert seqs(platform) == [[1, 2, 3], [4, 5, 6]]


async def test_a_batch_closes_when_its_window_is_over(spool: Spool) -> None:
    async with Platform() as platform:
        async with running(spool, [http("h", platform.url, BatchConfig(max_records=10_000, window_s=0.3))]):
            now = asyncio.get_running_loop().time()
            await asyncio.gather(*(spool.submit(bin_report("bin-0042", 1, seq), RAW) for seq in range(1, 4)))
            await platform.wait_for(1)
            assert platform.received[0].at - now >= 0.25  # held for the window, not sent per report
            await delivered_all(spool)
    assert seqs(platform) == [[1, 2, 3]]


async def test_each_sink_resumes_its_own_cursor_after_a_restart(tmp_path: Path) -> None:
    batch = BatchConfig(max_records=8, window_s=0.05)
    async with Platform() as good, Platform(default=Answer(503)) as down:
        async with open_spool(tmp_path) as spool:
            for seq in range(1, 7):
                await spool.submit(bin_report("bin-0042", 1, seq), RAW)
            async with running(spool, [http("good", good.url, batch), http("down", down.url, batch)]) as up:
                await eventually(lambda: up.runners[0].delivered == 6 and len(down.received) >= 2)
            assert spool.stats().reports == 6  # "down" has none of them yet
            assert spool.stats().delivered == {"good": 6, "down": 0}
            failed_key = down.received[0].key
        down.default = Answer(204)
        async with open_spool(tmp_path) as spool:  # a new process, the same database
            for seq in range(7, 9):
                await spool.submit(bin_report("bin-0042", 1, seq), RAW)
            async with running(spool, [http("good", good.url, batch), http("down", down.url, batch)]):
                await delivered_all(spool)
    assert seqs(good) == [[1, 2], [3, 4], [5, 6], [7, 8]]  # nothing delivered before was sent again
    assert seqs(down) == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert down.accepted()[0].key == failed_key  # the batch in flight at the stop kept its key


async def test_a_reading_leaves_the_spool_when_every_sink_has_it(spool: Spool, tmp_path: Path) -> None:
    batch = BatchConfig(max_records=4, window_s=0.01)
    async with Platform() as fast, Platform(default=Answer(503)) as slow:
        for seq in range(1, 5):
            await spool.submit(bin_report("bin-0042", 1, seq), RAW)
        async with running(spool, [http("fast", fast.url, batch), http("slow", slow.url, batch)]):
            await eventually(lambda: len(fast.accepted()) == 4)
            assert spool.stats().reports == 4
            slow.answer(Answer(204), Answer(204))
            await eventually(lambda: spool.stats().reports == 2)
            slow.default = Answer(204)
            await delivered_all(spool)


async def test_batch_keys_are_stable_and_distinct_per_gateway_sink_and_range() -> None:
    assert batch_key("a1", "http", 1, 10) == batch_key("a1", "http", 1, 10)
    keys = {batch_key("a1", "http", 1, 10), batch_key("a2", "http", 1, 10), batch_key("a1", "mqtt", 1, 10),
            batch_key("a1", "http", 1, 11), batch_key("a1", "http", 2, 10)}
    assert len(keys) == 5


async def test_drain_sends_what_is_committed_without_waiting_for_the_window(spool: Spool) -> None:
    async with Platform() as platform:
        upstream = Upstream(spool, [http("h", platform.url, BatchConfig(window_s=3600))])
        await upstream.start()
        for seq in range(1, 4):
            await spool.submit(bin_report("bin-0042", 1, seq), RAW)
        assert await upstream.drain(timeout=10)
    assert seqs(platform) == [[1, 2, 3]]
    assert spool.stats().reports == 0


async def test_drain_gives_up_at_its_deadline_and_keeps_the_batch(spool: Spool) -> None:
    async with Platform(default=Answer(503)) as platform:
        upstream = Upstream(spool, [http("h", platform.url, BatchConfig(window_s=0.01))])
        await upstream.start()
        await spool.submit(bin_report("bin-0042", 1, 1), RAW)
        assert not await upstream.drain(timeout=0.3)
    assert spool.stats().reports == 1
    assert spool.stats().delivered == {"h": 0}


async def test_backoff_grows_and_is_jittered() -> None:
    policy = RetryPolicy(initial_s=1, max_s=30, multiplier=2, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(n, None, rng) for n in range(8)]
    for n, d in enumerate(delays):
        base = min(30, 2 ** n)
        assert base / 2 <= d <= base
    assert len({round(d / min(30, 2 ** n), 6) for n, d in enumerate(delays)}) > 1  # not all the same share
    assert policy.delay(3, 120.0, rng) == 120.0  # Retry-After as given
    assert policy.delay(3, 10_000.0, rng) == policy.max_retry_after_s


async def test_health_names_a_failing_sink(spool: Spool) -> None:
    async with Platform(default=Answer(500)) as platform:
        await spool.submit(bin_report("bin-0042", 1, 1), RAW)
        async with running(spool, [http("city", platform.url, BatchConfig(window_s=0.01))]) as upstream:
            await eventually(lambda: upstream.health().degraded)
            assert "sink city failing" in upstream.health().reasons[0]
            assert "HTTP 500" in upstream.health().reasons[0]
            platform.default = Answer(204)
            await delivered_all(spool)
            assert not upstream.health().degraded


async def test_jsonl_sink_is_fed_by_the_batcher(spool: Spool, tmp_path: Path) -> None:
    out = tmp_path / "out" / "readings.jsonl"
    for seq in range(1, 4):
        await spool.submit(bin_report("bin-0042", 1, seq), RAW)
    spec = SinkSpec(JsonlSink(JsonlSinkConfig("file", out)), BatchConfig(window_s=0.01), FAST_RETRY)
    async with running(spool, [spec]):
        await delivered_all(spool)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["seq"], x["name"]) for x in lines] == [(s, n) for s in (1, 2, 3)
                                                      for n in ("fill", "dist", "temp", "batt")]


def test_sink_names_must_be_unique(tmp_path: Path) -> None:
    spec = http("same", "http://127.0.0.1:1", BatchConfig())
    with pytest.raises(ValueError, match="unique"):
        Upstream(None, [spec, http("same", "http://127.0.0.1:2", BatchConfig())])  # type: ignore[arg-type]


async def test_metrics_are_scraped_from_spool_and_sink_state(spool: Spool) -> None:
    metrics = Metrics()
    metrics.register(spool_collector(spool))
    for seq in range(1, 7):
        await spool.submit(bin_report("bin-0042", 1, seq), RAW)
    await spool.submit(bin_report("bin-0042", 1, 6), RAW)
    async with Platform() as platform:
        platform.answer(Answer(503))
        async with running(spool, [http("h", platform.url, BatchConfig(max_records=8, window_s=0.01))]) as upstream:
            metrics.register(upstream_collector(upstream))
            await delivered_all(spool)
            # the runner learns its cursor moved when the ack's transaction returns, just after the purge
            await eventually(lambda: upstream.runners[0].delivered == spool.last_id)
            text = metrics.exposition().decode()
    for line in ('kerbline_spool_stored_reports_total 6.0', 'kerbline_spool_duplicates_total 1.0',
                 'kerbline_spool_purged_reports_total 6.0', 'kerbline_spool_reports{kind="routine"} 0.0',
                 'kerbline_spool_degraded 0.0', 'kerbline_upstream_batches_total{sink="h"} 3.0',
                 'kerbline_upstream_readings_total{sink="h"} 24.0', 'kerbline_upstream_retries_total{sink="h"} 1.0',
                 'kerbline_upstream_lag{sink="h"} 0.0', 'kerbline_upstream_latency_seconds_count{sink="h"} 6.0',
                 'kerbline_upstream_latency_seconds_bucket{le="+Inf",sink="h"} 6.0'):
        assert line in text, line
