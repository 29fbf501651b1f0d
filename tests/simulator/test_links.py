"""Virtual links: the serial cable (two ptys through the simulator) with its faults, the network relay that
can be cut, the simulator's own broker with the contract's ACLs, and the tap that decodes what crosses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import serial

from gateway.wire import Command, Report, encode_frame, seal_command
from kerbline.wire import cose, report
from simulator.fleet.mqtt import MqttConnection, MqttError
from simulator.links.broker import GATEWAY_USER, Broker
from simulator.links.network import NetLink
from simulator.links.serial import MAX_PENDING, SerialLine
from simulator.links.tap import MqttTap, SerialTap, Tap

KEY = bytes(range(32))
DEVICE = "bin-0001"


def sealed(seq: int, boot: int = 1, device: str = DEVICE, key: bytes = KEY) -> bytes:
    payload = report.encode(boot, seq, [("fill", 40 + seq)], 1_782_000_000 + seq)
    return cose.Sealer(device, key).seal(payload)


async def read_port(port: serial.Serial, n: int, timeout: float = 5.0) -> bytes:
    """Read n bytes from a pyserial port without blocking the event loop."""
    out = b""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < n and asyncio.get_running_loop().time() < deadline:
        out += port.read(n - len(out))
        await asyncio.sleep(0.01)
    return out


def read_device(fd: int, n: int) -> bytes:
    import select

    out = b""
    while len(out) < n and select.select([fd], [], [], 5)[0]:
        out += os.read(fd, n - len(out))
    return out


@pytest.fixture
async def line(tmp_path: Path):  # type: ignore[no-untyped-def]
    tap = Tap(DEVICE, KEY)
    cable = SerialLine(DEVICE, tmp_path / "dev" / "ttyKL-test", SerialTap(tap))
    cable.start()
    device = os.open(cable.device_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    os.set_blocking(device, True)
    yield cable, device, tap
    os.close(device)
    cable.close()


async def test_serial_line_carries_both_ways_to_a_pyserial_port(line) -> None:  # type: ignore[no-untyped-def]
    cable, device, _ = line
    port = serial.Serial(str(cable.gateway_path), 115200, timeout=0)
    os.write(device, b"hello gateway")
    assert await read_port(port, 13) == b"hello gateway"
    port.write(b"hello device")
    await asyncio.sleep(0.1)
    assert read_device(device, 12) == b"hello device"
    assert cable.stats.up_bytes == 13 and cable.stats.down_bytes == 12
    port.close()


async def test_garbage_and_dropped_bytes(line) -> None:  # type: ignore[no-untyped-def]
    cable, device, _ = line
    port = serial.Serial(str(cable.gateway_path), 115200, timeout=0)
    cable.inject(b"\x00\xff\x13noise")
    assert await read_port(port, 8) == b"\x00\xff\x13noise"
    cable.drop_next(4)
    os.write(device, b"abcdefgh")
    assert await read_port(port, 4) == b"efgh"
    assert cable.stats.garbage_bytes == 8 and cable.stats.dropped_bytes == 4
    port.close()


async def test_unplug_hangs_up_the_port_and_replug_brings_it_back(line) -> None:  # type: ignore[no-untyped-def]
    cable, device, _ = line
    port = serial.Serial(str(cable.gateway_path), 115200, timeout=0)
    cable.unplug()
    assert not cable.gateway_path.exists()
    await asyncio.sleep(0.05)
    with pytest.raises(serial.SerialException):
        port.read(1)  # the adapter is gone: a read reports it
    port.close()
    os.write(device, b"lost")  # nobody on the line: gone
    await asyncio.sleep(0.05)
    assert cable.stats.unplugged_bytes == 4
    with pytest.raises(serial.SerialException):
        serial.Serial(str(cable.gateway_path), 115200)
    cable.replug()
    port = serial.Serial(str(cable.gateway_path), 115200, timeout=0)
    os.write(device, b"back")
    assert await read_port(port, 4) == b"back"
    assert cable.stats.unplugs == 1
    port.close()


async def test_a_reader_that_never_reads_costs_at_most_the_bound(line) -> None:  # type: ignore[no-untyped-def]
    cable, device, _ = line
    os.set_blocking(device, False)  # a blocking write into a full pty would stall the relay's own loop
    total = 40 * 4096  # 160 KB towards a gateway that is not reading
    written = 0
    while written < total:
        try:
            written += os.write(device, b"x" * min(4096, total - written))
        except BlockingIOError:
            pass
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.2)
    assert cable.stats.overflow > 0
    assert cable.stats.up_bytes + cable.stats.overflow == total
    assert cable.stats.up_bytes <= MAX_PENDING + 256 * 1024  # our bound plus what the kernel's buffer took


async def test_tap_decodes_reports_and_cumulative_acks(line) -> None:  # type: ignore[no-untyped-def]
    cable, device, tap = line
    port = serial.Serial(str(cable.gateway_path), 115200, timeout=0)
    seen: list[Report] = []
    tap.on_report = seen.append
    from kerbline.wire import frame

    for seq in (1, 2, 3, 2):  # 2 resent
        os.write(device, frame.encode(sealed(seq)))
    os.write(device, b"\x00\x01\x02garbage\x00")
    await read_port(port, 1)
    await asyncio.sleep(0.1)
    assert [r.seq for r in seen] == [1, 2, 3]
    assert (tap.sent, tap.resent, tap.queued) == (3, 1, 3)
    assert sum(tap.rejected.values()) == 1  # the garbage frame
    port.write(encode_frame(seal_command(DEVICE, KEY, Command(1, "ack", {"boot": 1, "seq": 2}))))
    await asyncio.sleep(0.1)
    assert (tap.acked, tap.queued, tap.commands["ack"]) == (2, 1, 1)
    assert tap.last is not None and tap.last.seq == 3
    port.close()


# ---------------------------------------------------------------------------------------- broker, network


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Broker(tmp_path / "broker", passwords={GATEWAY_USER: "gw-secret", "bin-0001": "b1", "bin-0002": "b2"})
    b.start()
    yield b
    b.stop()


async def gateway_client(broker: Broker, got: list[tuple[bytes, bytes]]) -> MqttConnection:
    conn = MqttConnection(lambda token: None, lambda topic, payload: got.append((topic, payload)))
    await conn.open(broker.host, broker.port, "gw", GATEWAY_USER, "gw-secret")
    await conn.subscribe(b"kerbline/v1/+/up")
    return conn


async def test_broker_acl_lets_a_device_publish_only_its_own_topic(broker: Broker) -> None:
    got: list[tuple[bytes, bytes]] = []
    gw = await gateway_client(broker, got)
    acks: list[int] = []
    dev = MqttConnection(acks.append)
    await dev.open(broker.host, broker.port, "bin-0001", "bin-0001", "b1")
    dev.publish(b"kerbline/v1/bin-0001/up", b"mine", 1)
    dev.publish(b"kerbline/v1/bin-0002/up", b"forged", 2)  # the ACL drops it (MQTT 3.1.1: still PUBACKed)
    for _ in range(100):
        if len(acks) == 2 and got:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert got == [(b"kerbline/v1/bin-0001/up", b"mine")]
    with pytest.raises(MqttError, match="not authorized|bad user name"):
        await MqttConnection(acks.append).open(broker.host, broker.port, "bin-0002", "bin-0002", "wrong")
    dev.close()
    gw.close()


async def test_broker_restart_keeps_its_port(broker: Broker) -> None:
    port = broker.port
    broker.restart_down()
    assert not broker.running
    await asyncio.to_thread(broker.start)
    conn = MqttConnection(lambda token: None)
    await conn.open(broker.host, port, "bin-0001", "bin-0001", "b1")
    assert broker.restarts == 1 and conn.connected
    conn.close()


async def test_network_cut_aborts_and_refuses_until_restored(broker: Broker) -> None:
    got: list[tuple[bytes, bytes]] = []
    gw = await gateway_client(broker, got)
    tap = Tap("bin-0001", KEY)
    net = NetLink("bin-0001", broker.host, broker.port, tap=MqttTap(tap))
    await net.start()
    lost: list[object] = []
    acks: list[int] = []
    dev = MqttConnection(acks.append, on_lost=lost.append)
    await dev.open(net.host, net.port, "bin-0001", "bin-0001", "b1")
    dev.publish(b"kerbline/v1/bin-0001/up", sealed(1), 1)
    for _ in range(100):
        if acks:
            break
        await asyncio.sleep(0.02)
    assert acks == [1] and tap.sent == 1 and tap.acked == 1  # the tap saw the report and its PUBACK
    net.cut()
    for _ in range(100):
        if lost:
            break
        await asyncio.sleep(0.02)
    assert lost and not dev.connected
    with pytest.raises((OSError, asyncio.TimeoutError, ConnectionError)):
        await MqttConnection(acks.append).open(net.host, net.port, "bin-0001", "bin-0001", "b1", timeout=1.0)
    assert net.stats.refused >= 1
    net.restore()
    again = MqttConnection(acks.append)
    await again.open(net.host, net.port, "bin-0001", "bin-0001", "b1")
    assert again.connected and net.stats.cuts == 1
    again.close()
    gw.close()
    await net.close()
