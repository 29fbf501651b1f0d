"""The fleet: many devices in one process, on the firmware's own logic, through a real broker.

- its MQTT client pipelines QoS 1 publishes and matches every PUBACK, within its in-flight bound;
- its RAM queue keeps the flash queue's bound and drop policy (routine before alarms);
- a fleet run delivers every report it makes, verified by gateway.wire on a subscriber of the real
  broker, with one connection per device (the broker's ACLs) or shared connections;
- network cuts and power cuts are played (a power cut: a new boot, the queue kept);
- commands from the gateway pass the firmware's Downlink gate;
- a seeded scenario gives the same frames twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.wire import Command, decode_mqtt_report, seal_command
from simulator.fleet.device import MemQueue
from simulator.fleet.fleet import Fleet
from simulator.fleet.mqtt import MqttConnection
from simulator.links.broker import FLEET_USER, GATEWAY_USER, Broker
from simulator.scenario import parse_scenario
from simulator.world import SimClock, World

SCENARIO = """
[scenario]
name = "fleet-test"
seed = 4242
start = 2026-03-10T16:00:00Z
duration = "6h"
time_factor = 60
link = "mqtt"

[bins]
interval_s = "15m"

[lights]
interval_s = "30m"

[faults]
ultrasonic_spike = 0.05
ultrasonic_timeout = 0.02
i2c_error = 0.01
net_cut_per_day = 8
net_cut_mean_s = "10m"
power_cut_per_day = 4
power_cut_mean_s = "5m"
brownout_per_day = 2

[[site]]
name = "leith-walk"
lat = 55.9653
lon = -3.1760
tz = "Europe/London"
bins = 24
lights = 8
kinds = { residential = 0.5, commercial = 0.3, park = 0.2 }

[[event]]
kind = "fire"
device = "bin-0003"
after = "1h"
"""
KEY_OF = {f"bin-{i:04d}": bytes([i]) * 32 for i in range(1, 25)} | {f"lamp-{i:04d}": bytes([100 + i]) * 32
                                                                    for i in range(1, 9)}


def scenario():  # type: ignore[no-untyped-def]
    return parse_scenario(SCENARIO, "fleet-test")


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    passwords = {GATEWAY_USER: "gw", FLEET_USER: "fleet", **{d: f"pw-{d}" for d in KEY_OF}}
    b = Broker(tmp_path / "broker", passwords=passwords, fleet_user=True)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """The gateway's side of the broker: every up message decoded and verified with gateway.wire."""

    def __init__(self) -> None:
        self.reports: dict[str, set[tuple[int, int]]] = defaultdict(set)
        self.alarms: dict[str, set[str]] = defaultdict(set)
        self.refused: list[str] = []
        self.conn = MqttConnection(lambda token: None, self._on)

    def _on(self, topic: bytes, payload: bytes) -> None:
        try:
            r = decode_mqtt_report(payload, topic.decode(), KEY_OF.get)
        except Exception as e:  # noqa: BLE001 (counted: the test asserts there are none)
            self.refused.append(repr(e))
            return
        self.reports[r.device].add((r.boot, r.seq))
        self.alarms[r.device] |= {str(x.value) for x in r.readings if x.name == "alarm"}

    async def start(self, broker: Broker) -> None:
        await self.conn.open(broker.host, broker.port, "gw-test", GATEWAY_USER, "gw")
        await self.conn.subscribe(b"kerbline/v1/+/up")

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.reports.values())


async def settle(fleet: Fleet, sub: Subscriber, timeout: float = 20.0) -> None:
    fleet.finish_faults()
    deadline = asyncio.get_running_loop().time() + timeout
    while fleet.outstanding or fleet.queued or sub.count < fleet.stats.reports:
        assert asyncio.get_running_loop().time() < deadline, (fleet.stats, fleet.queued, sub.count)
        fleet.pump()
        await asyncio.sleep(0.05)


async def run_fleet(broker: Broker, connections: int | None, hours: float = 6.0) -> tuple[Fleet, Subscriber]:
    sc = scenario()
    world = World(sc)
    sub = Subscriber()
    await sub.start(broker)
    fleet = Fleet(world, list(sc.devices), {d: k.hex() for d, k in KEY_OF.items()}, SimClock(sc.start),
                  host=broker.host, port=broker.port, connections=connections,
                  passwords={d: f"pw-{d}" for d in KEY_OF}, fleet_password="fleet",
                  settings={"light": {"sample_s": 60}})
    await fleet.connect()
    fleet.start()
    await fleet.run(sc.start + hours * 3600)
    await settle(fleet, sub)
    return fleet, sub


async def test_client_pipelines_and_bounds_what_is_in_flight(broker: Broker) -> None:
    acked: list[int] = []
    conn = MqttConnection(acked.append, max_inflight=50)
    await conn.open(broker.host, broker.port, "bin-0001", "bin-0001", "pw-bin-0001")
    accepted = [i for i in range(200) if conn.publish(b"kerbline/v1/bin-0001/up", b"x" * 80, i)]
    assert accepted == list(range(50))  # the rest waits for room
    for _ in range(200):
        if len(acked) == 50:
            break
        await asyncio.sleep(0.01)
    assert sorted(acked) == accepted and not conn.in_flight
    assert conn.publish(b"kerbline/v1/bin-0001/up", b"y", 999)
    conn.close()


def test_ram_queue_drops_routine_before_alarms_at_its_bound() -> None:
    q = MemQueue(max_bytes=10 * (100 + MemQueue.HEADER))
    for seq in range(1, 11):
        q.append(b"m" * 100, 1, seq, is_alarm=seq in (1, 2))
    q.append(b"n" * 100, 1, 11, False)
    assert [s for _, s, _, _ in q.peek(20)][:3] == [1, 2, 4]  # the oldest routine report (3) went
    assert q.dropped_routine == 1 and q.bytes_used <= q.max_bytes
    only_alarms = MemQueue(max_bytes=2 * (10 + MemQueue.HEADER))
    for seq in (1, 2, 3):
        only_alarms.append(b"a" * 10, 1, seq, True)
    assert [s for _, s, _, _ in only_alarms.peek(5)] == [2, 3] and only_alarms.dropped_alarm == 1
    assert only_alarms.ack_one(1, 2) and not only_alarms.ack_one(1, 2) and len(only_alarms) == 1


async def test_fleet_delivers_every_report_one_connection_per_device(broker: Broker) -> None:
    fleet, sub = await run_fleet(broker, connections=None)
    assert sub.refused == []
    assert sub.count == fleet.stats.reports == fleet.stats.acked > 0
    assert set(sub.reports) == set(KEY_OF)  # every device reported, on its own topic (ACLs hold)
    assert fleet.stats.faults["power_cut"] > 0 and fleet.stats.faults["net_cut"] > 0
    assert fleet.stats.reconnects > 0  # a cut aborts the device's connection; it comes back
    boots = {d: {b for b, _ in keys} for d, keys in sub.reports.items()}
    assert any(len(b) > 1 for b in boots.values())  # power cuts made new boots
    assert "fire" in sub.alarms["bin-0003"]
    await fleet.close()
    sub.conn.close()


async def test_fleet_over_shared_connections(broker: Broker) -> None:
    fleet, sub = await run_fleet(broker, connections=3, hours=2)
    assert sub.refused == [] and sub.count == fleet.stats.reports > 0
    await fleet.close()
    sub.conn.close()


async def test_commands_go_through_the_firmware_gate(broker: Broker) -> None:
    sc = scenario()
    fleet = Fleet(World(sc), list(sc.devices), {d: k.hex() for d, k in KEY_OF.items()}, SimClock(sc.start),
                  host=broker.host, port=broker.port, passwords={d: f"pw-{d}" for d in KEY_OF})
    await fleet.connect()
    fleet.start()
    await fleet.run(sc.start + 60)
    gw = MqttConnection(lambda token: None)
    await gw.open(broker.host, broker.port, "gw-cmd", GATEWAY_USER, "gw")
    device = fleet.devices["bin-0002"]
    before = device.board.unix_time()
    gw.publish(b"kerbline/v1/bin-0002/down", seal_command("bin-0002", KEY_OF["bin-0002"],
                                                          Command(5, "time", {"time": 1_900_000_000})), 1)
    gw.publish(b"kerbline/v1/bin-0002/down", seal_command("bin-0002", KEY_OF["bin-0002"],
                                                          Command(5, "ping", {})), 2)  # a replay: refused
    gw.publish(b"kerbline/v1/bin-0002/down", seal_command("bin-0002", KEY_OF["bin-0001"],
                                                          Command(6, "ping", {})), 3)  # wrong key: refused
    for _ in range(100):
        if fleet.stats.commands["time"]:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert fleet.stats.commands == {"time": 1}
    assert device.board.unix_time() == 1_900_000_000 and before != 1_900_000_000
    gw.close()
    await fleet.close()


def frames_of(seed_text: str) -> list[tuple[str, bytes]]:
    """Every report a seeded fleet makes in 3 simulated hours, in order (no broker: stepping only)."""
    sc = parse_scenario(seed_text, "fleet-test")
    fleet = Fleet(World(sc), list(sc.devices), {d: k.hex() for d, k in KEY_OF.items()}, SimClock(sc.start),
                  host="127.0.0.1", port=9)
    out: list[tuple[str, bytes]] = []
    fleet.on_report = lambda device, message: out.append((device, message))
    fleet.start()
    asyncio.run(fleet.run(sc.start + 3 * 3600))
    return out


def test_a_seeded_scenario_gives_the_same_frames_twice() -> None:
    first, second = frames_of(SCENARIO), frames_of(SCENARIO)
    assert len(first) > 100 and first == second
    other = frames_of(SCENARIO.replace("seed = 4242", "seed = 4243"))
    assert other != first
