"""Helpers for tests that run the spool and the batcher: a spool in a temp dir, an upstream that is
stopped at the end, quick retries, and waiting for a condition (the timeout only fails the test)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.spool import Spool, SpoolConfig
from gateway.upstream import RetryPolicy, SinkSpec, Upstream

# Retries after 10..50 ms, and health says "degraded" from the first failure.
FAST_RETRY = RetryPolicy(initial_s=0.01, max_s=0.05, degraded_after_s=0)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `condition` every 10 ms until it holds; AssertionError after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout} s") from None


@asynccontextmanager
async def open_spool(folder: Path, **config: object) -> AsyncIterator[Spool]:
    async with Spool(SpoolConfig(folder / "spool.db", **config)) as spool:  # type: ignore[arg-type]
        yield spool


@asynccontextmanager
async def running(spool: Spool, specs: Sequence[SinkSpec]) -> AsyncIterator[Upstream]:
    upstream = Upstream(spool, specs)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


async def delivered_all(spool: Spool, timeout: float = 10.0) -> None:
    """Wait until every sink has every committed report (the spool is empty)."""
    await eventually(lambda: spool.stats().reports == 0, timeout, "spool drained to every sink")
