"""The gateway under a real NOTIFY_SOCKET, as systemd runs it (`Type=notify`, `WatchdogSec=`).

The test plays systemd: it binds the datagram socket, passes `NOTIFY_SOCKET` and `WATCHDOG_USEC` to a
real `python -m gateway run` process, and reads what the gateway says. Devices publish through a real
mosquitto; upstream is a real HTTP server (the platform stand-in) or a JSON Lines file. The dead serial
reader is staged in-process (the port's task cancelled), since no input makes a healthy reader die.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection
from gateway.sdnotify import Notifier
from gateway.service import Gateway
from gateway.watchdog import Watchdog, describe
from tests.deploy.notify_socket import Notification, NotifySocket
from tests.gateway.rig import GatewayProcess, Pty, config_text, make_config, report_keys, sealed_report, write_registry
from tests.harness.mosquitto import Mosquitto
from tests.harness.platform import Answer, Platform

DEVICE = "bin-0042"
# Every stage's idle loop must stamp its progress well within the watchdog interval the tests use.
FAST_STAGES = "[devices]\ncheck_every_s = 0.2\n"


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket.path(tmp_path)
    yield sock
    sock.close()


def supervised(monkeypatch: pytest.MonkeyPatch, notify: NotifySocket, watchdog_s: float) -> None:
    """The environment systemd gives a `Type=notify` service with `WatchdogSec=watchdog_s` whose output
    goes to the journal."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify.env)
    monkeypatch.setenv("JOURNAL_STREAM", "8:123456")  # device:inode of the journal's stream socket
    monkeypatch.setenv("WATCHDOG_USEC", str(int(watchdog_s * 1_000_000)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # systemd sets it to the main pid; unknown before the start


async def wait_note(notify: NotifySocket, match: Callable[[Notification], bool], timeout: float = 20.0) -> Notification:
    return await asyncio.to_thread(notify.wait_for, match, timeout)


def backlog(note: Notification) -> int | None:
    found = re.search(r"\bbacklog=(\d+)", note.get("STATUS"))
    return int(found.group(1)) if found else None


def sigterm(gw: GatewayProcess) -> subprocess.Popen[bytes]:
    """What `systemctl stop` does first."""
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    return gw.proc


async def publish(broker: Mosquitto, seqs: range, forged: int = 0) -> None:
    """Reports `seqs` from DEVICE, then `forged` more with a broken MAC."""
    conn = await MqttConnection.open(broker.host, broker.port, ConnectOptions("test-device", clean_start=True),
                                     lambda *a: None)
    for seq in seqs:
        await conn.publish(f"kerbline/v1/{DEVICE}/up", sealed_report(DEVICE, 1, seq))
    for seq in range(seqs.stop, seqs.stop + forged):
        message = bytearray(sealed_report(DEVICE, 1, seq))
        message[-1] ^= 1
        await conn.publish(f"kerbline/v1/{DEVICE}/up", bytes(message))
    await conn.disconnect()


async def test_ready_pings_at_half_the_interval_status_carries_the_backlog_sigterm_drains(
        tmp_path: Path, mosquitto: Mosquitto, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY, then WATCHDOG=1 every WATCHDOG_USEC/2; reports held by a failing platform show in STATUS as
    the backlog (the sink is retrying, which is progress: pings go on); SIGTERM: STOPPING=1, the drain
    delivers all of them to the platform, exit 0."""
    write_registry(tmp_path / "registry.toml", [DEVICE])
    async with Platform(default=Answer(503)) as platform:
        sinks = (f'[[sinks]]\ntype = "http"\nname = "platform"\nurl = "{platform.url}/readings"\n'
                 "[sinks.batch]\nwindow_s = 0.05\n[sinks.retry]\ninitial_s = 0.1\nmax_s = 0.3\n")
        config = tmp_path / "gateway.toml"
        config.write_text(config_text(tmp_path, mqtt_port=mosquitto.port, sinks=sinks, extra=FAST_STAGES))
        watchdog_s = 3.0
        supervised(monkeypatch, notify, watchdog_s)
        with GatewayProcess(config, tmp_path / "gateway.log") as gw:
            ready = await wait_note(notify, lambda n: "READY" in n)
            assert ready.get("READY") == "1" and backlog(ready) == 0, ready.fields

            # the first round right after READY, then one every half interval
            pings = [await wait_note(notify, lambda n: "WATCHDOG" in n) for _ in range(4)]
            gaps = [b.at - a.at for a, b in zip(pings, pings[1:])]
            # half the interval apart: never early, and always before systemd's timeout would fire
            assert all(watchdog_s / 2 * 0.9 <= gap < watchdog_s for gap in gaps), gaps
            assert all(n.get("WATCHDOG") == "1" and backlog(n) == 0 for n in pings)

            await wait_note(notify, lambda n: "mqtt=up" in n.get("STATUS"))  # subscribed: nothing published is missed
            await publish(mosquitto, range(1, 21), forged=1)
            held = await wait_note(notify, lambda n: backlog(n) == 20)
            assert "WATCHDOG" in held, held.fields  # a sink that retries is alive
            assert "mqtt=up" in held.get("STATUS") and "sinks=platform:retrying" in held.get("STATUS")

            platform.default = Answer(204)  # the platform recovers; the gateway is stopped before it catches up
            proc = sigterm(gw)
            stopping = await wait_note(notify, lambda n: "STOPPING" in n)
            assert stopping.get("STOPPING") == "1" and stopping.get("STATUS").startswith("stopping: ")
            code = await asyncio.to_thread(proc.wait, 30)
            assert code == 0, gw.log()
            after = await asyncio.to_thread(notify.collect, 0.2)
            assert not any("WATCHDOG" in n for n in after)

        readings = [r for req in platform.accepted() for r in req.json()["readings"]]
        assert report_keys(readings) == [(DEVICE, 1, seq) for seq in range(1, 21)]
        # journald's form: one line per event, its priority first (no timestamp, no colour), the device
        # and the reason as fields
        lines = gw.log().splitlines()
        assert lines and all(re.fullmatch(r"<[2-7]>level=\w+ logger=[\w.]+ msg=\S.*", line) for line in lines), lines
        assert not any("\x1b" in line for line in lines)
        rejected = [line for line in lines if "msg=rejected" in line]
        assert len(rejected) == 1 and rejected[0].startswith("<4>level=warning ")
        assert f"device={DEVICE} reason=bad_tag link=mqtt" in rejected[0]
        assert any(line.startswith("<6>") and "upstream_drained=True" in line for line in lines)


async def test_a_hung_sink_stops_the_pings_and_a_recovered_one_earns_them_back(
        tmp_path: Path, mosquitto: Mosquitto, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON Lines sink writes to a FIFO nobody reads, so its write hangs (as on a dead NFS mount):
    the batcher stops moving, the pings stop, STATUS names the stalled sink, the log says why. Opening
    the FIFO's other end frees the write: the batch is delivered and the pings come back."""
    write_registry(tmp_path / "registry.toml", [DEVICE])
    fifo = tmp_path / "out" / "readings.jsonl"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    sinks = (f'[[sinks]]\ntype = "jsonl"\nname = "file"\npath = "{fifo}"\nfsync = false\n'
             "[sinks.batch]\nwindow_s = 0.05\n")
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(tmp_path, mqtt_port=mosquitto.port, sinks=sinks, extra=FAST_STAGES))
    watchdog_s = 2.0
    supervised(monkeypatch, notify, watchdog_s)
    reader = -1
    with GatewayProcess(config, tmp_path / "gateway.log") as gw:
        try:
            await wait_note(notify, lambda n: "READY" in n)
            await wait_note(notify, lambda n: "WATCHDOG" in n and "mqtt=up" in n.get("STATUS"))  # subscribed

            await publish(mosquitto, range(1, 4))
            stalled = await wait_note(notify, lambda n: "stalled" in n.get("STATUS"))
            assert "WATCHDOG" not in stalled
            assert stalled.get("STATUS").startswith("stalled: sink:file ") and backlog(stalled) == 3, stalled.fields
            # no ping for longer than the watchdog interval: systemd would kill and restart the gateway here
            quiet = await asyncio.to_thread(notify.collect, watchdog_s * 1.25)
            assert quiet and not any("WATCHDOG" in n for n in quiet)
            assert "stage made no progress" in gw.log() and "stage=sink:file" in gw.log()

            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the hung open() returns
            resumed = await wait_note(notify, lambda n: "WATCHDOG" in n)
            assert backlog(resumed) == 0, resumed.fields
            assert "stage moving again" in gw.log()
            readings = [json.loads(line) for line in os.read(reader, 1 << 16).decode().splitlines()]
            assert report_keys(readings) == [(DEVICE, 1, seq) for seq in range(1, 4)]

            proc = sigterm(gw)
            await wait_note(notify, lambda n: "STOPPING" in n)
            assert await asyncio.to_thread(proc.wait, 30) == 0, gw.log()
        finally:
            if reader >= 0:
                os.close(reader)


async def test_a_dead_serial_reader_stops_the_pings(tmp_path: Path, notify: NotifySocket) -> None:
    """The gateway in this process with one serial port on a pty; the port's task is cancelled, as if it
    had died of a bug: the port stops stamping its progress, so the watchdog stops pinging and names it."""
    write_registry(tmp_path / "registry.toml", [DEVICE])
    pty = Pty()
    gateway = Gateway(make_config(tmp_path, serial=[pty.path], extra=FAST_STAGES))
    watchdog = Watchdog(Notifier(notify.env), gateway.liveness, lambda: describe(gateway), interval_s=1.0)
    await gateway.start()
    try:
        watchdog.ready()
        await wait_note(notify, lambda n: "WATCHDOG" in n and "serial=1/1" in n.get("STATUS"))
        reader = next(t for t in asyncio.all_tasks() if t.get_name() == f"serial {pty.path}")
        reader.cancel()
        stalled = await wait_note(notify, lambda n: "stalled" in n.get("STATUS"))
        assert "WATCHDOG" not in stalled and stalled.get("STATUS").startswith("stalled: serial "), stalled.fields
        quiet = await asyncio.to_thread(notify.collect, 1.25)
        assert quiet and not any("WATCHDOG" in n for n in quiet)
    finally:
        watchdog.close()
        await gateway.stop()
        pty.close()
