"""Serial ingest: the ack point (unit), and real ptys carrying the firmware's own serial link (CPython)."""
from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

from gateway.ingest.serial_ack import AckPoint
from gateway.service import Gateway
from gateway.wire import encode_frame
from tests.gateway.rig import (Pty, SerialDevice, jsonl_readings, make_config, report_keys, sealed_report, wait_for,
                               write_registry)


def _round(point: AckPoint, keys: list[tuple[int, int]], durable: bool = True) -> None:
    for key in keys:
        point.settle(point.frame(key), durable)


def test_first_frames_after_connect_are_not_acked_until_a_round_restarts() -> None:
    point = AckPoint()
    point.loss()
    _round(point, [(1, 1), (1, 2)])
    assert point.take_ack() is None  # the device may have sent (1, 0)... before we listened
    _round(point, [(1, 1), (1, 2)])  # its resend round starts at its oldest unacked report
    assert point.take_ack() == (1, 2)


def test_gap_left_by_device_thinning_does_not_block_the_ack() -> None:
    point = AckPoint()
    point.loss()
    _round(point, [(1, 5), (1, 9)])
    _round(point, [(1, 5), (1, 9), (1, 10)])  # seqs 6..8 were thinned on the device
    assert point.take_ack() == (1, 10)


def test_loss_on_the_wire_stops_the_ack_before_the_lost_frame() -> None:
    point = AckPoint()
    point.loss()
    _round(point, [(1, 1)])
    _round(point, [(1, 1), (1, 2)])
    assert point.take_ack() == (1, 2)
    point.loss()  # frame (1, 3) arrived with a bad CRC
    _round(point, [(1, 4), (1, 5)])
    assert point.take_ack() is None
    _round(point, [(1, 3), (1, 4), (1, 5)])  # the resend round
    assert point.take_ack() == (1, 5)


def test_noise_between_rounds_starves_lone_rounds_but_not_the_firmware_s_doubled_ones() -> None:
    """Noise on the idle line before each round taints it; the firmware sends each resend round twice,
    back to back (kerbline/links/serial.py), and the second copy follows the first with nothing lost."""
    point = AckPoint()
    for _ in range(3):
        point.loss()  # noise while the line was idle
        _round(point, [(1, 1), (1, 2)])
        assert point.take_ack() is None  # a lone round is never trusted
    point.loss()
    _round(point, [(1, 1), (1, 2)])
    _round(point, [(1, 1), (1, 2)])  # the same round again, straight after
    assert point.take_ack() == (1, 2)


def test_a_report_the_spool_refused_is_never_acked_past() -> None:
    point = AckPoint()
    point.loss()
    _round(point, [(1, 1)])
    _round(point, [(1, 1)])
    assert point.take_ack() == (1, 1)
    first, second, third = point.frame((1, 2)), point.frame((1, 3)), point.frame((1, 4))
    point.settle(first, False)
    point.settle(second, True)
    point.settle(third, True)
    assert point.take_ack() is None
    _round(point, [(1, 5)])  # continues the broken run: still not acked
    assert point.take_ack() is None
    _round(point, [(1, 2), (1, 3), (1, 4), (1, 5)])
    assert point.take_ack() == (1, 5)


def test_ack_waits_for_the_commit_of_every_earlier_report_of_the_run() -> None:
    point = AckPoint()
    point.loss()
    _round(point, [(1, 1)])
    a, b = point.frame((1, 1)), point.frame((1, 2))
    point.settle(b, True)
    assert point.take_ack() is None  # (1, 1) is not committed yet
    point.settle(a, True)
    assert point.take_ack() == (1, 2)


def test_resend_below_the_ack_asks_for_the_ack_again_and_refused_frames_do_not_break_a_run() -> None:
    point = AckPoint()
    point.loss()
    _round(point, [(1, 1)])
    _round(point, [(1, 1), (1, 2)])
    assert point.take_ack() == (1, 2)
    _round(point, [(1, 2)])
    assert point.take_ack() == (1, 2)  # the device missed it: send it again
    point.settle(point.frame(None), True)  # a frame with a good CRC and a bad tag
    _round(point, [(1, 3)])
    assert point.take_ack() == (1, 3)
    _round(point, [(2, 1)])  # a new boot continues the queue
    assert point.take_ack() == (2, 1)


async def test_reports_over_a_pty_reach_the_sink_and_the_device_queue_empties(tmp_path: Path) -> None:
    write_registry(tmp_path / "registry.toml")
    pty = Pty()
    gateway = Gateway(make_config(tmp_path, serial=[pty.path]))
    device = SerialDevice("bin-0042", pty, tmp_path / "dev")
    sent = [device.report() for _ in range(12)]
    await gateway.start()
    device.start()
    try:
        await wait_for(lambda: len(device.queue) == 0, 20, "the device's queue to be acked empty")
        assert device.app.times, "the gateway sends `time` when it sees the device"
        await wait_for(lambda: len(report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))) == 12, 10,
                       "every report in the sink")
        got = report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))
        assert got == [("bin-0042", boot, seq) for boot, seq in sent]
        # noise on the line is a counted framing error, not a lost report
        pty.write(b"boot banner \xff\xfe garbage\x00")
        device.report()
        await wait_for(lambda: len(device.queue) == 0, 20, "the report after the noise to be acked")
        port = gateway.serial.ports[pty.path]
        assert port.framing_errors >= 1
        assert gateway.metrics.stored["serial"] == 13
    finally:
        await device.stop()
        await gateway.stop()
        pty.close()


async def test_ports_read_in_the_same_turn_share_a_commit_and_each_device_gets_its_own_acks(tmp_path: Path) -> None:
    """Reports of every port read in one turn go to the spool as one batch; the answers go back to each
    port for its own reports, so each device is acked exactly its own queue, and each keeps its order."""
    ids = ["bin-0042", "bin-0043", "lamp-0117"]
    write_registry(tmp_path / "registry.toml", ids)
    ptys = [Pty() for _ in ids]
    gateway = Gateway(make_config(tmp_path, serial=[pty.path for pty in ptys]))
    devices = [SerialDevice(device_id, pty, tmp_path / device_id) for device_id, pty in zip(ids, ptys)]
    sent = {device.id: [device.report() for _ in range(10)] for device in devices}
    await gateway.start()
    for device in devices:
        device.start()
    try:
        await wait_for(lambda: all(len(device.queue) == 0 for device in devices), 30, "every queue acked empty")
        await wait_for(lambda: len(report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))) == 30, 10,
                       "every report in the sink")
        got = report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))
        for device_id in ids:
            assert [(b, s) for d, b, s in got if d == device_id] == sent[device_id]
        assert gateway.metrics.stored["serial"] == 30
        assert all(port.device == device_id for port, device_id in zip(gateway.serial.ports.values(), ids))
    finally:
        for device in devices:
            await device.stop()
        await gateway.stop()
        for pty in ptys:
            pty.close()


async def test_port_that_vanishes_and_comes_back_is_reopened_and_gets_time_again(tmp_path: Path) -> None:
    write_registry(tmp_path / "registry.toml")
    link = tmp_path / "ttyUSB0"  # a stable name, like /dev/serial/by-id/...
    first = Pty()
    os.symlink(first.path, link)
    gateway = Gateway(make_config(tmp_path, serial=[str(link)]))
    device = SerialDevice("bin-0042", first, tmp_path / "dev")
    device.report()
    await gateway.start()
    device.start()
    port = gateway.serial.ports[str(link)]
    try:
        await wait_for(lambda: len(device.queue) == 0, 20, "first report acked")
        await device.stop()
        first.close()  # unplugged
        await wait_for(lambda: not port.is_open, 10, "the gateway to notice the port is gone")
        assert gateway.health().degraded
        second = Pty()
        os.unlink(link)
        os.symlink(second.path, link)  # plugged in again (a new tty behind the same name)
        device2 = SerialDevice("bin-0042", second, tmp_path / "dev")  # same flash: queue and cid state
        device2.seq = device.seq
        times_before = len(device2.app.times)
        device2.report()
        device2.start()
        await wait_for(lambda: port.is_open and port.opens == 2, 10, "the port to be reopened")
        await wait_for(lambda: len(device2.queue) == 0, 20, "the report after replugging acked")
        assert len(device2.app.times) > times_before
        await device2.stop()
        second.close()
    finally:
        await gateway.stop()
    keys = report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))
    assert keys == [("bin-0042", 1, 1), ("bin-0042", 1, 2)]


async def test_forged_frames_are_refused_and_commands_reach_a_serial_device(tmp_path: Path) -> None:
    write_registry(tmp_path / "registry.toml")
    pty = Pty()
    gateway = Gateway(make_config(tmp_path, serial=[pty.path]))
    device = SerialDevice("bin-0042", pty, tmp_path / "dev")
    device.report()
    await gateway.start()
    device.start()
    try:
        await wait_for(lambda: len(device.queue) == 0, 20, "the first report acked")
        forged = bytearray(sealed_report("bin-0042", 1, 99))
        forged[-1] ^= 0x55
        pty.write(encode_frame(bytes(forged)))
        pty.write(encode_frame(sealed_report("bin-0043", 1, 1)[:-3]))  # cut short: not CBOR any more
        await wait_for(lambda: gateway.metrics.rejected.labels("bad_tag", "serial")._value.get() == 1, 10, "bad_tag")
        await wait_for(lambda: gateway.metrics.rejected.labels("bad_cbor", "serial")._value.get() == 1, 10, "bad_cbor")
        held = gateway.quarantine.list(device="bin-0042")
        assert [f["reason"] for f in held] == ["bad_tag"] and held[0]["source"] == pty.path
        entry = gateway.devices.submit_command("bin-0042", "ping", {})
        await wait_for(lambda: device.app.pings == 1, 10, "the ping at the device")
        assert entry.status.value == "sent" and entry.link == "serial"
        device.report()  # the device answers a ping with a report
        await wait_for(lambda: entry.status.value == "effected", 10, "the ping's effect")
        config = gateway.devices.submit_command("bin-0042", "config", {"interval": 600})
        await wait_for(lambda: device.app.configs == [{"interval": 600}], 10, "the config at the device")
        assert config.cid is not None and config.cid > entry.cid  # type: ignore[operator]
    finally:
        await device.stop()
        await gateway.stop()
        pty.close()


async def _deliver_in_small_writes(tmp_path: Path, read_interval_s: float) -> tuple[int, int]:
    """20 reports, one frame every 10 ms (as a USB adapter hands data over); (reads, reports stored)."""
    write_registry(tmp_path / "registry.toml")
    pty = Pty()
    config = make_config(tmp_path, serial=[pty.path])
    config = dataclasses.replace(config, serial=dataclasses.replace(config.serial, read_interval_s=read_interval_s))
    gateway = Gateway(config)
    await gateway.start()
    try:
        assert gateway.serial is not None
        port = gateway.serial.ports[pty.path]
        await wait_for(lambda: port.is_open, 5, "the port to open")
        for seq in range(1, 21):
            pty.write(encode_frame(sealed_report("bin-0042", 1, seq)))
            await asyncio.sleep(0.01)
        out = tmp_path / "out/readings.jsonl"
        await wait_for(lambda: len(report_keys(jsonl_readings(out))) == 20, 10, "every report in the sink")
        return port.reads, len(report_keys(jsonl_readings(out)))
    finally:
        await gateway.stop()


async def test_a_paced_port_takes_many_small_deliveries_in_a_few_reads_and_loses_none(tmp_path: Path) -> None:
    reads, stored = await _deliver_in_small_writes(tmp_path, 0.1)
    assert stored == 20 and reads <= 5, reads  # 200 ms of deliveries, one read per 100 ms interval


async def test_without_pacing_each_delivery_is_its_own_read(tmp_path: Path) -> None:
    reads, stored = await _deliver_in_small_writes(tmp_path, 0.0)
    assert stored == 20 and reads >= 15, reads
