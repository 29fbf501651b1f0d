"""Gateway end to end: reports/s (MQTT QoS 1 in, COSE check, durable spool, gzip JSON batches out over
HTTP), arrival-to-upstream latency, RSS with 10,000 registered devices, and, in the same run, the rates
of mosquitto relaying and of bare subscribe-and-republish forwarders, as ratios.

Everything is a separate process on this machine: mosquitto, the publishers (raw sockets, prebuilt
packets, QoS 1 pipelined), the gateway (`python -m gateway run`), the HTTP platform (aiohttp, counts
readings) and the counting subscribers. Each measurement gets a fresh broker (no sessions left over).
The broker is configured with `max_queued_messages 0` and `max_inflight_messages 1000` (mosquitto's
defaults, 1000 queued and 20 in flight per client, would drop or throttle a QoS 1 stream).

    python bench/gateway_e2e.py [--reports 150000] [--active 1000] [--registered 10000] [--publishers 2]
                                [--skip-forwarders] [--quick] [--profile DIR]

`--quick` measures only the relay and the gateway at saturation (for iterating); `--profile DIR` records
the saturated gateway with py-spy (a dev tool) into DIR/gateway.txt (collapsed stacks, one line each).
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tools.forwarders import FORWARDERS  # noqa: E402
from bench.tools.mqtt_load import build_packets, count_subscriber, fleet, fleet_key, publish_process  # noqa: E402
from tests.harness.mosquitto import Mosquitto, free_port  # noqa: E402

# Queue without limit (the default 1000 would drop); 1000 in flight to MQTT 3 clients (the counting
# subscribers, paho): mosquitto looks each PUBACK up in the client's in-flight list, so a very large
# window costs the broker more per message (MQTT 5 clients set theirs with Receive Maximum).
BROKER_CONFIG = ["max_queued_messages 0", "max_inflight_messages 1000", "log_type error"]
READINGS_PER_REPORT = 4


def _build(args: tuple[list[str], int]) -> list[bytes]:
    return build_packets(*args)


def make_load(active: int, reports: int, publishers: int) -> list[list[bytes]]:
    devices = fleet(active)
    per_device = max(1, reports // active)
    slices = [devices[i::publishers] for i in range(publishers)]
    with mp.get_context("fork").Pool(publishers) as pool:
        return pool.map(_build, [(s, per_device) for s in slices])


def run_publishers(broker: Mosquitto, loads: list[list[bytes]], rate: float | None = None) -> tuple[float, float]:
    """(first send, last PUBACK) over all publishers."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 0.5
    share = None if rate is None else rate / len(loads)
    procs = [ctx.Process(target=publish_process, args=(broker.host, broker.port, f"pub-{i}-{time.time_ns()}", load,
                                                        start_at, share, results)) for i, load in enumerate(loads)]
    for p in procs:
        p.start()
    got = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return min(g[1] for g in got), max(g[2] for g in got)


def measure_relay(workdir: Path, loads: list[list[bytes]]) -> float:
    total = sum(len(load) for load in loads)
    with Mosquitto(workdir / "relay", extra_config=BROKER_CONFIG) as broker:
        ctx = mp.get_context("fork")
        ready, result = ctx.Event(), ctx.Queue()
        sub = ctx.Process(target=count_subscriber, args=(broker.host, broker.port, "kerbline/v1/+/up", total,
                                                         ready, result))
        sub.start()
        ready.wait(10)
        first, _ = run_publishers(broker, loads)
        count, _, last = result.get(timeout=600)
        sub.join()
    return count / (last - first)


def measure_forwarder(workdir: Path, name: str, target: Any, loads: list[list[bytes]]) -> float | None:
    total = sum(len(load) for load in loads)
    with Mosquitto(workdir / f"fwd-{target.__name__}", extra_config=BROKER_CONFIG) as broker:
        ctx = mp.get_context("fork")
        ready, counted, result = ctx.Event(), ctx.Event(), ctx.Queue()
        sub = ctx.Process(target=count_subscriber, args=(broker.host, broker.port, "fwd/#", total, counted, result,
                                                         90.0))
        sub.start()
        counted.wait(10)
        fwd = ctx.Process(target=target, args=(broker.host, broker.port, ready, 600.0))
        fwd.start()
        if not ready.wait(20):
            fwd.kill()
            sub.kill()
            return None
        first, _ = run_publishers(broker, loads)
        count, _, last = result.get(timeout=700)
        fwd.kill()
        sub.join()
    if count < total:
        print(f"   {name}: only {count} of {total} forwarded before the timeout")
    return count / (last - first)


# ----------------------------------------------------------------------------------------- gateway

def platform_process(port: int, ready: Any) -> None:
    """An HTTP platform that takes every batch (204) and counts its readings; GET /count reads it."""
    from aiohttp import web

    count = 0

    async def post(request: web.Request) -> web.Response:
        nonlocal count
        body = await request.read()  # aiohttp inflates the gzip body
        count += body.count(b'"seq"')
        return web.Response(status=204)

    async def get(request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.post("/readings", post), web.get("/count", get)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def write_gateway_files(workdir: Path, broker: Mosquitto, registered: int, platform_port: int,
                        http_port: int, uvloop: bool = False) -> Path:
    lines = []
    for device in fleet(registered):
        lines.append(f'[devices.{device}]\nkind = "bin"\nkey = "{fleet_key(device).hex()}"\n')
    (workdir / "registry.toml").write_text("".join(lines))
    config = workdir / "gateway.toml"
    config.write_text(f"""
[gateway]
state_dir = "{workdir}/state"
registry = "{workdir}/registry.toml"
log_level = "warning"
uvloop = {"true" if uvloop else "false"}
[mqtt]
port = {broker.port}
client_id = "bench-gateway"
[http]
port = {http_port}
[[sinks]]
type = "http"
name = "platform"
url = "http://127.0.0.1:{platform_port}/readings"
batch.window_s = 0.25
batch.max_records = 20000
""")
    return config


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _quantile(metrics: dict[str, float], q: float) -> float:
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items()
                     if k.startswith("kerbline_upstream_latency_seconds_bucket"))
    total = buckets[-1][1] if buckets else 0
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound
    return float("inf")


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _count(port: int) -> int:
    return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10).read())


def measure_gateway(workdir: Path, loads: list[list[bytes]], registered: int, rate: float | None,
                    label: str, uvloop: bool = False, profile: Path | None = None) -> dict[str, float]:
    total = sum(len(load) for load in loads)
    run_dir = workdir / label
    run_dir.mkdir()
    with Mosquitto(run_dir / "broker", extra_config=BROKER_CONFIG) as broker:
        platform_port, http_port = free_port(), free_port()
        config = write_gateway_files(run_dir, broker, registered, platform_port, http_port, uvloop)
        ctx = mp.get_context("fork")
        ready = ctx.Event()
        platform = ctx.Process(target=platform_process, args=(platform_port, ready))
        platform.start()
        ready.wait(10)
        log = (run_dir / "gateway.log").open("wb")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)], cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.time() + 30
            while True:
                try:
                    if _metrics(http_port).get("kerbline_mqtt_connected") == 1:
                        break
                except OSError:
                    pass
                if time.time() > deadline or gateway.poll() is not None:
                    raise RuntimeError(f"gateway did not come up: {(run_dir / 'gateway.log').read_text()}")
                time.sleep(0.1)
            idle_rss, _ = _rss_mb(gateway.pid)
            spy = _py_spy(gateway.pid, profile) if profile is not None else None
            cpu0, main0 = _cpu_seconds(gateway.pid), _cpu_seconds(gateway.pid, gateway.pid)
            first, last_puback = run_publishers(broker, loads, rate)
            want = total * READINGS_PER_REPORT
            while _count(platform_port) < want:
                if time.time() - last_puback > 120:
                    raise RuntimeError(f"only {_count(platform_port) // 4} of {total} reports arrived")
                time.sleep(0.01)
            end = time.time()
            cpu = _cpu_seconds(gateway.pid) - cpu0
            main_cpu = _cpu_seconds(gateway.pid, gateway.pid) - main0
            metrics = _metrics(http_port)
            rss, hwm = _rss_mb(gateway.pid)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(60)
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                gateway.kill()
            platform.kill()
    return {"rate": total / (end - first), "p50": _quantile(metrics, 0.5), "p99": _quantile(metrics, 0.99),
            "rss": rss, "hwm": hwm, "idle_rss": idle_rss, "cpu_per_report_us": cpu / total * 1e6,
            "loop_cpu_per_report_us": main_cpu / total * 1e6,
            "commits": metrics.get("kerbline_spool_commits_total", 0), "reports": total}


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the gateway until SIGINT: the thread holding the GIL (the Python work), one line per stack."""
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "200", "--gil", "--format", "raw",
                             "--output", str(out / "gateway.txt")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def measure_gateway_retrying(*args: Any, **kwargs: Any) -> dict[str, float]:
    """`measure_gateway`, once more if the gateway did not come up (on a machine shared with other test
    runs, a port `free_port` found free can be taken before the gateway binds it)."""
    try:
        return measure_gateway(*args, **kwargs)
    except RuntimeError as exc:
        if "did not come up" not in str(exc):
            raise
        print("   (the gateway did not come up, likely a port taken meanwhile: once more)")
        args = (*args[:4], f"{args[4]}-again", *args[5:])
        return measure_gateway(*args, **kwargs)


def _cpu_seconds(pid: int, task: int | None = None) -> float:
    """CPU time of the process, or of one of its threads (`task`: its tid; the main thread's is the pid)."""
    path = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    parts = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=150_000)
    parser.add_argument("--active", type=int, default=1000, help="devices publishing")
    parser.add_argument("--registered", type=int, default=10_000, help="devices in the registry")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--skip-forwarders", action="store_true")
    parser.add_argument("--quick", action="store_true", help="relay and gateway at saturation only")
    parser.add_argument("--profile", type=Path, help="py-spy the saturated gateway into this directory")
    args = parser.parse_args()
    print(f"gateway e2e: {args.reports} reports from {args.active} devices ({args.registered} registered), "
          f"{args.publishers} publisher processes, {os.cpu_count()} cores")
    t = time.time()
    loads = make_load(args.active, args.reports, args.publishers)
    print(f"  load built in {time.time() - t:.1f} s ({sum(len(x) for x in loads)} sealed reports, "
          f"{len(loads[0][0])} bytes per PUBLISH)")
    with tempfile.TemporaryDirectory(prefix="kerbline-bench-") as tmp:
        workdir = Path(tmp)
        relay = measure_relay(workdir, loads)
        print(f"  mosquitto relay (QoS 1, raw publishers -> counting subscriber): {relay:,.0f} msg/s")
        forwarders: dict[str, float | None] = {}
        if not (args.skip_forwarders or args.quick):
            for name, target in FORWARDERS.items():
                forwarders[name] = measure_forwarder(workdir, name, target, loads)
                value = forwarders[name]
                print(f"  forwarder {name}: " + (f"{value:,.0f} msg/s" if value else "did not run"))
        gw = measure_gateway_retrying(workdir, loads, args.registered, None, "saturation", profile=args.profile)
        print(f"  GATEWAY end to end (saturation): {gw['rate']:,.0f} reports/s "
              f"({gw['rate'] * READINGS_PER_REPORT:,.0f} readings/s), {gw['cpu_per_report_us']:.0f} us CPU per report "
              f"({gw['loop_cpu_per_report_us']:.0f} in the event loop thread, the rest in the spool's SQLite thread "
              f"and helpers), {gw['commits']:.0f} group commits")
        print(f"  gateway RSS: {gw['rss']:.0f} MB at the end, peak {gw['hwm']:.0f} MB, idle {gw['idle_rss']:.0f} MB; "
              f"mosquitto relay / gateway = {relay / gw['rate']:.2f}")
        if args.quick:
            return
        other = measure_gateway_retrying(workdir, loads, args.registered, None, "uvloop", uvloop=True)
        print(f"  the same on uvloop (gateway.uvloop = true): {other['rate']:,.0f} reports/s, "
              f"{other['cpu_per_report_us']:.0f} us CPU per report")
        paced_rate = min(20_000.0, 0.7 * gw["rate"])
        paced = measure_gateway_retrying(workdir, loads, args.registered, paced_rate, "paced")
        print(f"  gateway at {paced_rate:,.0f} reports/s offered: delivered {paced['rate']:,.0f}/s, latency "
              f"arrival->upstream p50 <= {paced['p50'] * 1000:.0f} ms, p99 <= {paced['p99'] * 1000:.0f} ms "
              f"(histogram bucket bounds; batch window 250 ms)")
        print(f"  gateway RSS with {args.registered} registered devices: {gw['rss']:.0f} MB at the end, "
              f"peak {max(gw['hwm'], paced['hwm']):.0f} MB (with {args.reports:,} reports queued at the broker), "
              f"idle {gw['idle_rss']:.0f} MB")
        print(f"  ratios: gateway / mosquitto relay = {gw['rate'] / relay:.2f}")
        for name, value in forwarders.items():
            if value:
                print(f"          gateway / forwarder {name} = {gw['rate'] / value:.2f}")
        print(f"  budget: >= 20,000 reports/s: {'met' if gw['rate'] >= 20_000 else 'NOT met'}; "
              f"p99 <= window + 100 ms (350 ms): {'met' if paced['p99'] <= 0.35 else 'NOT met'}; "
              f"RSS <= 150 MB: {'met' if max(gw['hwm'], paced['hwm']) <= 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
