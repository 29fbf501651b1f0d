"""The serial link, device side (kerbline.links.serial), over a real pty against a gateway played by the test.

The device is tests/firmware/mp/serial_device.py in a 64 KB MicroPython VM (compiled firmware, flash =
its VFS root, the link UART = the sim board's pty port). The gateway is this test, on the pty's master
end, with the gateway's own wire code (gateway.wire: FrameDecoder, COSE verify, seal_command). The
device's clock moves only when the test says `tick`, so resends and backoff are checked step by step
without any timing assertion.
"""
from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.wire import Command, FrameDecoder, Rejected, decode_serial_report, encode_frame, seal_command
from tests.harness.micropython import MicroPythonProcess
from tests.harness.pty_serial import PtySerial

DEVICES = {d["id"]: bytes.fromhex(d["key"]) for d in json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "devices.json").read_text())["devices"]}
DEV = "bin-0042"
KEY = DEVICES[DEV]
ACK_MS = 1000
BACKOFF_MAX_MS = 8000
WAIT = 15.0  # seconds a step may take before the test gives up (a guard, not a timing assertion)
# imports the driver precompiled from the folder given first (see the mp_lib fixture), then runs it
RUNNER = "import sys\nsys.path.insert(0, sys.argv[1])\nimport serial_device\nserial_device.main(*sys.argv[2:])\n"


class Device:
    """serial_device.py in its VM; `expect` returns its next line that matches, keeping the others."""

    def __init__(self, proc: MicroPythonProcess) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.expect("READY")

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        while True:
            try:
                line = self._queue.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}\n" + self.transcript()) from None
            if line is None:
                raise AssertionError(f"device exited before {pattern!r}\n" + self.transcript())
            self.lines.append(line)
            match = re.match(pattern, line)
            if match:
                return match

    def send(self, command: str) -> None:
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def tick(self, ms: int) -> None:
        self.send(f"tick {ms}")
        self.expect(r"TICK \d+")

    def report(self, n: int, alarm: bool = False) -> None:
        self.send(f"report {n}" + (" alarm" if alarm else ""))
        for _ in range(n):
            self.expect(r"QUEUED \d+ \d+")

    def stats(self) -> dict[str, Any]:
        self.send("stats")
        return json.loads(self.expect(r"STATS (.*)").group(1))

    def wait_stats(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Ask for stats until `done(stats)`: bytes the gateway wrote reach the device in their own time."""
        for _ in range(int(WAIT / 0.02)):
            stats = self.stats()
            if done(stats):
                return stats
            threading.Event().wait(0.02)
        raise AssertionError(f"stats never satisfied the condition: {stats}\n" + self.transcript())

    def transcript(self) -> str:
        return "\n".join(self.lines[-60:]) + "\n--- stderr ---\n" + self.proc.stderr_text()


class Gateway:
    """The gateway's end of the line: the pty master, gateway.wire framing, COSE and commands."""

    def __init__(self, pair: PtySerial) -> None:
        self.pair = pair
        self.decoder = FrameDecoder()
        self.cid = 100
        self.rejected: list[Rejected] = []

    def reports(self, n: int) -> list[tuple[int, int]]:
        """The (boot, seq) of the next `n` reports on the line, each verified as the gateway would."""
        got: list[tuple[int, int]] = []
        for _ in range(int(WAIT / 0.1)):
            if len(got) >= n:
                break
            for item in self.decoder.feed(self.pair.read_master(4096, timeout=0.1)):
                if isinstance(item, Rejected):
                    self.rejected.append(item)
                    continue
                r = decode_serial_report(item, lambda d: DEVICES.get(d))
                assert r.device == DEV
                got.append((r.boot, r.seq))
        assert len(got) == n, f"expected {n} reports, got {got}"
        return got

    def command(self, op: str, key: bytes = KEY, cid: int | None = None, **args: Any) -> bytes:
        """Send a command; returns its frame (to replay it). A new cid unless one is given."""
        if cid is None:
            self.cid += 1
            cid = self.cid
        frame = encode_frame(seal_command(DEV, key, Command(cid, op, args)))
        self.pair.write_master(frame)
        return frame

    def ack(self, boot: int, seq: int) -> bytes:
        return self.command("ack", boot=boot, seq=seq)


@pytest.fixture
def line(pty_serial: PtySerial) -> PtySerial:
    # The gateway uses the master end; the harness's pyserial port on the slave only holds the line
    # open (so a device restart does not hang up the master) and never reads.
    return pty_serial


@pytest.fixture
def start(micropython_process, line: PtySerial, tmp_path: Path, mp_lib: Path) -> Iterator[Callable[..., Device]]:
    """`start(boot=1)`: the device process on the pty slave, 64 KB heap; its flash is one folder that
    outlives a restart. (No VFS root: the wrapper would cost 4 KB of the heap; the driver opens only
    its flash folder and the pty.)"""
    devices: list[Device] = []
    flash = tmp_path / "flash"
    flash.mkdir()

    def run(boot: int = 1, max_bytes: int = 4000) -> Device:
        args = [str(mp_lib), str(flash), line.path, DEV, KEY.hex(), str(boot), str(max_bytes), str(ACK_MS),
                str(BACKOFF_MAX_MS)]
        proc = micropython_process(RUNNER, heap="64k", args=args)
        device = Device(proc)
        devices.append(device)
        return device

    yield run
    for device in devices:
        device.proc.close()


@pytest.fixture
def gateway(line: PtySerial) -> Gateway:
    return Gateway(line)


def test_at_most_four_in_flight_and_cumulative_acks_free_the_window(start, gateway) -> None:
    device = start()
    device.report(6)
    device.tick(0)
    assert gateway.reports(4) == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert device.stats()["flight"] == ["1.1", "1.2", "1.3", "1.4"]
    gateway.ack(1, 2)
    stats = device.wait_stats(lambda s: s["acked"] == 2)
    assert stats["queue"] == 4 and stats["sent"] == 6  # the freed window took 5 and 6 at once
    assert gateway.reports(2) == [(1, 5), (1, 6)]
    gateway.ack(1, 6)
    stats = device.wait_stats(lambda s: s["queue"] == 0)
    assert stats["flight"] == [] and stats["bytes"] == 0 and stats["resent"] == 0


def test_unacked_reports_go_again_oldest_first_with_doubling_waits(start, gateway) -> None:
    device = start()
    device.report(3)
    device.tick(0)
    assert gateway.reports(3) == [(1, 1), (1, 2), (1, 3)]
    waits = []
    for _ in range(5):
        rto = device.stats()["rto"]
        waits.append(rto)
        device.tick(rto - 1)
        assert device.stats()["resent"] == 6 * (len(waits) - 1), "resent before its time"
        device.tick(1)
        assert gateway.reports(6) == [(1, 1), (1, 2), (1, 3)] * 2  # a resend round goes twice, back to back
    assert waits == [1000, 2000, 4000, 8000, 8000]  # doubling, capped at backoff_max_ms
    gateway.ack(1, 1)
    stats = device.wait_stats(lambda s: s["acked"] == 1)
    assert stats["rto"] == ACK_MS and stats["flight"] == ["1.2", "1.3"]


def test_lost_frames_and_lost_acks_are_repaired_by_resends(start, gateway) -> None:
    device = start()
    device.report(5)
    device.tick(0)
    assert gateway.reports(4) == [(1, 1), (1, 2), (1, 3), (1, 4)]
    # (1, 2) was lost on the line: the gateway can only ack (1, 1)
    gateway.ack(1, 1)
    device.wait_stats(lambda s: s["acked"] == 1)
    assert gateway.reports(1) == [(1, 5)]
    device.tick(ACK_MS)
    assert gateway.reports(8) == [(1, 2), (1, 3), (1, 4), (1, 5)] * 2
    # the gateway's ack is lost: everything comes again, the gateway acks the duplicates once more
    device.tick(2 * ACK_MS)
    assert gateway.reports(8) == [(1, 2), (1, 3), (1, 4), (1, 5)] * 2
    gateway.ack(1, 5)
    stats = device.wait_stats(lambda s: s["queue"] == 0)
    assert stats["acked"] == 5 and stats["resent"] == 16


def test_garbage_and_damaged_frames_are_counted_and_the_stream_recovers(start, gateway, line) -> None:
    device = start()
    device.report(1)
    device.tick(0)
    assert gateway.reports(1) == [(1, 1)]
    good = encode_frame(seal_command(DEV, KEY, Command(1, "ack", {"boot": 1, "seq": 1})))
    bad_crc = bytearray(good)
    bad_crc[5] ^= 0x20 if bad_crc[5] != 0x20 else 0x21
    line.write_master(b"rst:0x1 (POWERON_RESET),boot:0x13\r\n\x00")  # a boot banner, then a delimiter
    line.write_master(bytes(bad_crc))
    line.write_master(b"\x05\x01\x02\x00")  # COBS code 5 runs past the end of the frame
    line.write_master(b"\xaa" * 3000 + b"\x00")  # longer than any frame
    line.write_master(good[: len(good) // 2])  # half a frame runs into the next one: that one is lost,
    line.write_master(good)                     # but the 0x00 after it resynchronises the stream
    assert device.wait_stats(lambda s: sum(s["link_rejected"].values()) == 5)["acked"] == 0
    line.write_master(good)
    stats = device.wait_stats(lambda s: s["queue"] == 0)
    rejected = stats["link_rejected"]
    assert rejected["too_large"] == 1 and rejected["bad_crc"] >= 1 and rejected["bad_cobs"] >= 2
    assert stats["acked"] == 1 and stats["downlink_rejected"] == {}
    assert any(line.startswith("LOG serial: refused too_large") for line in device.lines)


def test_forged_and_replayed_commands_do_nothing(start, gateway) -> None:
    device = start()
    device.report(2)
    device.tick(0)
    assert gateway.reports(2) == [(1, 1), (1, 2)]
    gateway.command("ack", key=DEVICES["bin-0043"], boot=1, seq=2)  # another device's key
    gateway.command("reboot", key=DEVICES["bin-0043"])
    stats = device.wait_stats(lambda s: s["link_rejected"].get("bad_tag") == 2)
    assert stats["queue"] == 2 and stats["acked"] == 0
    config = gateway.command("config", interval=600)
    device.expect(r"CONFIG \[\('interval', 600\)\]")
    gateway.pair.write_master(config)  # the same frame again
    gateway.command("reboot", cid=gateway.cid - 1)  # an older cid
    stats = device.wait_stats(lambda s: s["link_rejected"].get("replay") == 2)
    assert stats["downlink_rejected"] == {"bad_tag": 2, "replay": 2}
    assert "REBOOT" not in device.lines and stats["queue"] == 2


def test_time_on_reconnect_resends_at_once_and_ping_is_answered_with_a_report(start, gateway) -> None:
    device = start()
    device.report(2)
    device.tick(0)
    assert gateway.reports(2) == [(1, 1), (1, 2)]
    device.tick(ACK_MS)
    device.tick(2 * ACK_MS)
    assert gateway.reports(8) == [(1, 1), (1, 2)] * 4  # two resend rounds, each sent twice
    assert device.stats()["rto"] == 4 * ACK_MS
    # the gateway (re)connects: time first; the device does not wait out its backoff
    gateway.command("time", time=1_767_225_600)
    device.expect(r"TIME 1767225600")
    assert gateway.reports(4) == [(1, 1), (1, 2)] * 2
    assert device.stats()["rto"] == ACK_MS
    gateway.command("ping")
    device.expect("PING")
    assert gateway.reports(1) == [(1, 3)]
    gateway.ack(1, 3)
    assert device.wait_stats(lambda s: s["queue"] == 0)["acked"] == 3


def test_unacked_reports_survive_a_restart_and_go_first(start, gateway) -> None:
    device = start(boot=1)
    device.report(3, alarm=True)
    device.tick(0)
    assert gateway.reports(3) == [(1, 1), (1, 2), (1, 3)]
    ping = gateway.command("ping")
    device.expect("PING")
    assert gateway.reports(1) == [(1, 4)]
    gateway.ack(1, 1)
    device.wait_stats(lambda s: s["acked"] == 1)
    device.proc.popen.kill()  # a power cut, as far as the device can tell
    device.proc.close()
    device = start(boot=2)
    device.report(1)
    device.tick(0)
    assert gateway.reports(4) == [(1, 2), (1, 3), (1, 4), (2, 1)]
    gateway.pair.write_master(ping)  # replayed after the reboot: the cid was on flash
    assert device.wait_stats(lambda s: s["link_rejected"].get("replay") == 1)["queue"] == 4
    assert "PING" not in device.lines
    gateway.ack(2, 1)
    assert device.wait_stats(lambda s: s["queue"] == 0)["acked"] == 4
