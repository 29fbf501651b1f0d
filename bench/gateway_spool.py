"""Spool and upstream figures (part of `make bench`).

1. submit -> commit: reports/s with group commit, against one commit (one fsync) per report, same run,
   same disk.
2. drain: a backlog of reports sent to a local HTTP server (another process, as the platform would be)
   in gzip JSON batches: reports/s and readings/s.
3. steady load: reports submitted at a fixed rate while the HTTP sink runs; the server measures each
   reading's arrival-to-platform latency (the bench gives each report its arrival time as its time).
   At 20,000/s batches close at their record count; at 1,000/s at their window, which then sets the
   latency. Process CPU counts both threads and the bench's own producer.

Run: .venv/bin/python bench/gateway_spool.py [--rate 20000] [--seconds 5] [--backlog 100000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.spool import Spool, SpoolConfig  # noqa: E402
from gateway.upstream import BatchConfig, RetryPolicy, SinkSpec, Upstream  # noqa: E402
from gateway.upstream.http import HttpSink, HttpSinkConfig  # noqa: E402
from gateway.upstream.httpclient import HttpEndpoint  # noqa: E402
from tests.harness.reports import bin_report, report  # noqa: E402

RAW = bytes(86)  # a bin report's COSE message is 86 bytes


# --- the platform, in its own process ---------------------------------------------------------------

def serve(port_out: multiprocessing.connection.Connection) -> None:
    """Count readings and, per reading, now - its time (the bench sets time = arrival at the gateway)."""
    latencies: list[float] = []
    counts = {"requests": 0, "readings": 0}

    async def ingest(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        now = time.time()
        counts["requests"] += 1
        counts["readings"] += len(body["readings"])
        latencies.extend(now - r["time"] for r in body["readings"])
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**counts, "latencies": latencies if request.query.get("lat") else []})

    async def reset(request: web.Request) -> web.Response:
        latencies.clear()
        counts.update(requests=0, readings=0)
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/ingest", ingest)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


# --- 1. submit -> commit ----------------------------------------------------------------------------

async def submit_rate(folder: Path, count: int, concurrency: int, **spool: object) -> tuple[float, int]:
    reports = [bin_report(f"bin-{i % 100:04d}", 1, i // 100 + 1) for i in range(count)]
    async with Spool(SpoolConfig(folder / "spool.db", **spool)) as s:  # type: ignore[arg-type]
        it = iter(reports)

        async def worker() -> None:
            for r in it:
                await s.submit(r, RAW)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        commits = s.stats().counters.commits
    return count / elapsed, commits


# --- 2. drain ---------------------------------------------------------------------------------------

def http_spec(port: int, batch: BatchConfig) -> SinkSpec:
    sink = HttpSink(HttpSinkConfig("platform", HttpEndpoint(f"http://127.0.0.1:{port}/ingest", timeout_s=30)))
    return SinkSpec(sink, batch, RetryPolicy(initial_s=0.05, max_s=1))


async def platform_stats(port: int, latencies: bool = False) -> dict:
    async with ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/stats", params={"lat": "1"} if latencies else {}) as r:
            return await r.json()


async def drain_rate(folder: Path, port: int, backlog: int, batch: BatchConfig) -> tuple[float, int]:
    async with Spool(SpoolConfig(folder / "spool.db", max_bytes=2 << 30)) as s:
        await asyncio.gather(*(s.submit(bin_report(f"bin-{i % 100:04d}", 1, i // 100 + 1), RAW)
                               for i in range(backlog)))
        upstream = Upstream(s, [http_spec(port, batch)])
        start = time.perf_counter()
        await upstream.start()
        while s.stats().reports:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        batches = upstream.runners[0].stats.batches
        await upstream.stop()
    return backlog / elapsed, batches


# --- 3. steady load ---------------------------------------------------------------------------------

async def steady(folder: Path, port: int, rate: int, seconds: float, batch: BatchConfig) -> dict:
    async with ClientSession() as http:
        await (await http.post(f"http://127.0.0.1:{port}/reset")).release()
    tick = 0.005
    per_tick = max(1, int(rate * tick))
    total = int(rate * seconds)
    reports = [report(f"bin-{i % 1000:04d}", 1, i // 1000 + 1, ("fill", 42), ("dist", 1234), ("temp", 21.5),
                      ("batt", 3712), time=None, uptime=1) for i in range(total)]
    cpu0 = time.process_time()
    async with Spool(SpoolConfig(folder / "spool.db")) as s:
        upstream = Upstream(s, [http_spec(port, batch)])
        await upstream.start()
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future] = set()
        start = loop.time()
        sent = 0
        while sent < total:
            due = min(total, int((loop.time() - start) / tick + 1) * per_tick)
            while sent < due:
                arrival = time.time_ns()
                task = asyncio.ensure_future(s.submit(reports[sent], RAW, arrival_ns=arrival, time_s=arrival / 1e9,
                                                      time_estimated=True))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(max(0.0, start + (sent // per_tick) * tick - loop.time()))
        submit_elapsed = loop.time() - start
        await asyncio.gather(*pending)
        while s.stats().reports:
            await asyncio.sleep(0.01)
        commits = s.stats().counters.commits
        await upstream.stop()
    cpu = time.process_time() - cpu0
    stats = await platform_stats(port, latencies=True)
    lat = sorted(stats["latencies"])
    return {"offered": total / submit_elapsed, "readings": stats["readings"], "commits": commits,
            "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)], "max": lat[-1], "cpu": cpu,
            "wall": loop.time() - start}


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="kerbline-bench-", dir=args.dir))
    print(f"spool on {root} (filesystem of {args.dir or tempfile.gettempdir()}), {os.cpu_count()} cpus")

    grouped, commits = await submit_rate(root / "grouped", args.reports, concurrency=2000)
    single, _ = await submit_rate(root / "single", args.baseline, concurrency=1, group_max=1, group_wait_s=0)
    print(f"submit->commit, group commit:       {grouped:9,.0f} reports/s "
          f"({args.reports:,} reports, {commits} commits, {args.reports / commits:.0f} per fsync)")
    print(f"submit->commit, one commit/report:  {single:9,.0f} reports/s ({args.baseline:,} reports)")
    print(f"group commit / one commit per report: {grouped / single:.1f}x")

    recv, send = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(send,), daemon=True)
    server.start()
    port = recv.recv()
    try:
        batch = BatchConfig(max_records=args.batch_records, window_s=args.window)
        rate, batches = await drain_rate(root / "drain", port, args.backlog, batch)
        print(f"drain to HTTP (gzip JSON, {args.batch_records} readings/batch): {rate:9,.0f} reports/s, "
              f"{rate * 4:,.0f} readings/s ({args.backlog:,} reports, {batches} batches)")
        for rate, seconds, name in ((args.rate, args.seconds, "steady"), (args.low_rate, 3.0, "low")):
            result = await steady(root / name, port, rate, seconds, batch)
            print(f"steady {rate:,} reports/s offered for {seconds:.0f} s (achieved {result['offered']:,.0f}/s), "
                  f"HTTP sink, window {args.window} s: arrival->platform p50 {result['p50'] * 1000:.0f} ms, "
                  f"p99 {result['p99'] * 1000:.0f} ms, max {result['max'] * 1000:.0f} ms "
                  f"(budget p99 <= window + 100 ms = {(args.window + 0.1) * 1000:.0f} ms); "
                  f"{result['commits']} commits; process CPU {result['cpu'] / result['wall'] * 100:.0f}% of one core")
    finally:
        server.kill()
        server.join()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=100_000, help="reports for the group-commit rate")
    parser.add_argument("--baseline", type=int, default=2_000, help="reports for the one-commit-per-report rate")
    parser.add_argument("--backlog", type=int, default=100_000, help="reports drained to HTTP")
    parser.add_argument("--rate", type=int, default=20_000, help="reports/s offered in the steady run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--low-rate", type=int, default=1_000,
                        help="reports/s of a second, light run, where batches close at the window")
    parser.add_argument("--window", type=float, default=0.5, help="batch window (s)")
    parser.add_argument("--batch-records", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="folder for the spool files (default: the temp dir)")
    asyncio.run(main(parser.parse_args()))
