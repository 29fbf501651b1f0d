"""The simulator's budgets: fleet devices and reports/s from one process, faithful RSS per device.

Budget (docs/architecture.md): the fleet runs at least 10,000 devices and 10,000 reports/s from one
process; the faithful mode's memory per device is reported. Everything runs against the simulator's own
mosquitto on this machine (QoS 1, every report acknowledged by the broker before it counts), and every
figure is printed next to baselines measured in the same run:

1. MQTT clients, publishing the same prebuilt 88-byte report 40,000 times at QoS 1 and waiting for every
   PUBACK: paho-mqtt (its network thread), aiomqtt (asyncio over paho), gmqtt (when installed) and the
   fleet's own `simulator.fleet.mqtt.MqttConnection` (pipelined). This is how the fleet's client was
   chosen: the others top out well under the fleet's 10,000/s before any report is even built.
2. Report making alone: the firmware's `report.encode` + `cose.Sealer.seal` in a loop on prebuilt records
   (the floor of a report's cost in this process).
3. The fleet: `fleet10k` (10,000 devices: 8,000 bins, 2,000 streetlights, 10 sites), stepped as fast as
   it goes, after a warm-up interval that makes every device's world models: reports made, sealed,
   published and PUBACKed per second, over 4 shared connections and over one connection per device
   (10,000 sockets, the broker's ACLs). Lights sample every 10 minutes here (`sample_s` 600, the
   firmware's maximum; their loop turns cost CPU without making reports) and report every 15 minutes.
   Also the CPU the process and the broker used per report: on a shared machine the rate follows the
   load of the moment, the CPU per report much less (it is the figure to compare runs by).
4. Faithful mode: RSS of the MicroPython processes of 4 always-on streetlights (the firmware at its
   64 KB heap, on the sensor server; their VM is bigger by the firmware's ROM image, docs/simulator.md),
   against a bare `micropython -X heapsize=64k` process.

    python bench/sim_fleet.py [--quick] [--fleet]
      --quick: smaller counts, for iterating
      --fleet: only the fleet and the two baselines its ratios are taken against (the fleet's own client
               on one connection, report making alone); no other MQTT clients, no faithful mode
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.tools.firmware_build import micropython_path  # noqa: E402
from kerbline.wire import report  # noqa: E402
from kerbline.wire.cose import Sealer  # noqa: E402
from simulator.devices import provision  # noqa: E402
from simulator.devices.runner import DEFAULT_HEAP  # noqa: E402
from simulator.fleet.fleet import Fleet, tune_gc  # noqa: E402
from simulator.fleet.mqtt import MqttConnection  # noqa: E402
from simulator.links.broker import Broker  # noqa: E402
from simulator.scenario import builtin_scenario  # noqa: E402
from simulator.world import SimClock, World  # noqa: E402

BUDGET_DEVICES = 10_000
BUDGET_RATE = 10_000
PAYLOAD = Sealer("bin-0001", b"k" * 32).seal(report.encode(1, 1, [("fill", 42), ("dist", 812), ("temp", 17.5),
                                                                ("batt", 3900)], 1_782_000_000))
TOPIC = "kerbline/v1/bin-0001/up"


# ------------------------------------------------------------------------------------ 1. MQTT clients

def paho_rate(port: int, n: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    count = [0]

    def on_publish(client: object, userdata: object, mid: int, *rest: object) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    for _ in range(n):
        client.publish(TOPIC, PAYLOAD, qos=1)
    done.wait(300)
    rate = n / (time.perf_counter() - t0)
    client.loop_stop()
    client.disconnect()
    return rate


async def aiomqtt_rate(port: int, n: int) -> float:
    import logging

    import aiomqtt

    logging.getLogger("mqtt").setLevel(logging.ERROR)  # one warning line per pending publish otherwise

    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-aiomqtt", max_inflight_messages=1000,
                              max_queued_outgoing_messages=0) as client:
        t0 = time.perf_counter()
        for start in range(0, n, 1000):  # many in flight at once; each publish() returns at its PUBACK
            await asyncio.gather(*(client.publish(TOPIC, PAYLOAD, qos=1) for _ in range(min(1000, n - start))))
        return n / (time.perf_counter() - t0)


async def gmqtt_rate(port: int, n: int) -> float | None:
    """gmqtt has no public PUBACK callback: its PUBACK handler (looked up by name per packet) is wrapped."""
    try:
        import gmqtt  # type: ignore[import-untyped]
    except ImportError:
        return None
    done = asyncio.Event()
    count = [0]
    client = gmqtt.Client("bench-gmqtt")
    await client.connect("127.0.0.1", port, version=gmqtt.constants.MQTTv311)
    handler = client._package_handler  # noqa: SLF001
    original = handler._handle_puback_packet  # noqa: SLF001

    def counting(cmd: int, packet: bytes) -> None:
        original(cmd, packet)
        count[0] += 1
        if count[0] == n:
            done.set()

    handler._handle_puback_packet = counting  # noqa: SLF001
    t0 = time.perf_counter()
    for i in range(n):
        client.publish(TOPIC, PAYLOAD, qos=1)
        if i % 1000 == 999:
            await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 300)
    rate = n / (time.perf_counter() - t0)
    await client.disconnect()
    return rate


async def lean_rate(port: int, n: int, connections: int) -> float:
    done = asyncio.Event()
    count = [0]

    def on_ack(token: object) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    conns = []
    for i in range(connections):
        conn = MqttConnection(on_ack, max_inflight=5000)
        await conn.open("127.0.0.1", port, f"bench-lean-{i}")
        conns.append(conn)
    topic = TOPIC.encode()
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        for conn in conns:
            for _ in range(500):
                if sent >= n or not conn.publish(topic, PAYLOAD, sent):
                    break
                sent += 1
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 300)
    rate = n / (time.perf_counter() - t0)
    for conn in conns:
        conn.close()
    return rate


# ------------------------------------------------------------------------------------ 2. report making

def seal_rate(n: int) -> float:
    sealer = Sealer("bin-0001", b"k" * 32)
    records = [("fill", 42), ("dist", 812), ("temp", 17.5), ("batt", 3900)]
    t0 = time.perf_counter()
    for i in range(n):
        sealer.seal(report.encode(1, i + 1, records, 1_782_000_000 + i))
    return n / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ 3. the fleet

@dataclass
class FleetFigures:
    devices: int
    rate: float  # reports acknowledged by the broker per second in the measured window
    cpu_us: float  # CPU time of this process per report acknowledged (user + system)
    cpu_share: float  # of this process, in the window (1.0: one core busy all along)
    broker_us: float  # the broker's CPU time per report acknowledged
    rss_mb: int  # peak RSS of this process so far


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fleet_rate(broker: Broker, devices: int, connections: int | None, measure_s: float) -> FleetFigures:
    sc = builtin_scenario("fleet10k")
    specs = list(sc.devices)[:devices]
    world = World(sc)
    keys = {s.id: provision.new_key() for s in specs}
    fleet = Fleet(world, specs, keys, SimClock(sc.start), host=broker.host, port=broker.port, connections=connections,
                  settings={"light": {"sample_s": 600}}, max_outstanding=20000)
    await fleet.connect()
    fleet.start()
    tune_gc()
    await fleet.run(sc.start + sc.bins.interval_s)  # warm-up: every device wakes once, its models are made
    assert broker.pid is not None
    acked0, t0, cpu0, broker0 = fleet.stats.acked, time.perf_counter(), time.process_time(), cpu_s(broker.pid)
    t = sc.start + sc.bins.interval_s
    while time.perf_counter() - t0 < measure_s:
        t += 300
        await fleet.run(t)
    while fleet.outstanding:
        await asyncio.sleep(0.01)
    elapsed, acked = time.perf_counter() - t0, fleet.stats.acked - acked0
    cpu, broker_cpu = time.process_time() - cpu0, cpu_s(broker.pid) - broker0
    await fleet.close()
    gc.unfreeze()
    return FleetFigures(len(fleet.devices), acked / elapsed, cpu / acked * 1e6, cpu / elapsed, broker_cpu / acked * 1e6,
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


# ------------------------------------------------------------------------------------ 4. faithful RSS

def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def faithful_rss(lights: int) -> tuple[float, float]:
    """(mean RSS MB of running faithful lights, RSS MB of a bare VM process with the program's heap)."""
    from simulator.devices.faithful import FaithfulStreet

    with tempfile.TemporaryDirectory() as tmp:
        bare = await asyncio.create_subprocess_exec(
            str(micropython_path()), "-X", f"heapsize={DEFAULT_HEAP}", "-c", "import time\ntime.sleep(30)")
        sc = builtin_scenario("soak")
        specs = [d for d in sc.devices if d.kind == "light" and d.link == "serial"][:lights]
        world = World(sc)
        street = FaithfulStreet(world, world.clock(paced=True), Path(tmp), specs)
        await street.start()
        await asyncio.sleep(4.0)  # booted, sampling, reports queued on their (unread) lines
        pids = [d.runner._proc.pid for d in street.devices.values() if d.runner._proc is not None]  # noqa: SLF001
        device_kb = [rss_kb(p) for p in pids]
        bare_kb = rss_kb(bare.pid)
        await street.stop()
        bare.kill()
        await bare.wait()
    return sum(device_kb) / max(len(device_kb), 1) / 1024, bare_kb / 1024


# ------------------------------------------------------------------------------------ main

async def main(quick: bool, fleet_only: bool) -> int:
    n = 10_000 if quick else 40_000
    measure_s = 5.0 if quick else 15.0
    results: list[FleetFigures] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker", acl=False)
        broker.start()
        try:
            print(f"1. MQTT clients, QoS 1, {n} x {len(PAYLOAD)}-byte reports, every PUBACK awaited (msg/s)")
            lean1 = await lean_rate(broker.port, n, 1)
            rates = {"lean (fleet's), 1 connection": lean1}
            if not fleet_only:
                rates["lean (fleet's), 4 connections"] = await lean_rate(broker.port, n, 4)
                rates["paho-mqtt 2 (network thread)"] = await asyncio.to_thread(paho_rate, broker.port, n)
                rates["aiomqtt 2"] = await aiomqtt_rate(broker.port, n)
                g = await gmqtt_rate(broker.port, n)
                if g is not None:
                    rates["gmqtt"] = g
            for name, rate in rates.items():
                print(f"   {name:<32} {rate:>10,.0f}   x{rate / lean1:.2f} of lean")
            floor = seal_rate(n)
            print(f"2. report making alone (firmware encode + seal, CPython): {floor:,.0f} reports/s "
                  f"({1e6 / floor:.1f} us each)")
            print(f"3. fleet10k stepped, {measure_s:.0f} s measured after a warm-up interval (reports PUBACKed/s)")
            for label, connections in (("4 shared connections", 4), ("one connection per device", None)):
                f = await fleet_rate(broker, BUDGET_DEVICES, connections, measure_s)
                results.append(f)
                print(f"   {label:<28} devices {f.devices:,}  {f.rate:>8,.0f} reports/s  "
                      f"({f.rate / floor * 100:.0f}% of report making alone, {f.rate / lean1 * 100:.0f}% of the lean "
                      f"client's rate)  peak RSS {f.rss_mb} MB")
                print(f"   {'':<28} CPU per report: {f.cpu_us:.1f} us here (x{f.cpu_us * floor / 1e6:.1f} report making "
                      f"alone; this process {f.cpu_share * 100:.0f}% busy), {f.broker_us:.1f} us in the broker")
        finally:
            broker.stop()
    verdicts = ", ".join(f"{label} {'meets' if f.rate >= BUDGET_RATE else 'MISSES'} ({f.rate:,.0f}/s)"
                         for label, f in zip(("shared", "per-device"), results))
    print(f"   budget {BUDGET_DEVICES:,} devices and {BUDGET_RATE:,} reports/s from one process: {verdicts}; "
          f"{os.cpu_count()} cores, shared with the broker")
    if not fleet_only:
        device_mb, bare_mb = await faithful_rss(4)
        print(f"4. faithful mode: {device_mb:.1f} MB RSS per device process (4 streetlights, heap {DEFAULT_HEAP}); "
              f"a bare VM process with that heap (no ROM image): {bare_mb:.1f} MB (x{device_mb / bare_mb:.2f})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for iterating")
    parser.add_argument("--fleet", action="store_true", help="only the fleet and the baselines of its ratios")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick, args.fleet)))
