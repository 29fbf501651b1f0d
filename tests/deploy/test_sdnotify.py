"""sd_notify and the watchdog logic against a real datagram NOTIFY_SOCKET (path and abstract forms).

The watchdog's decisions are checked on a virtual clock (progress stamps set by the test), its wiring
into the event loop on the real one; the whole gateway under a notify socket is in test_service_notify.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import Notifier, one_line, socket_address, watchdog_interval
from gateway.watchdog import DEFAULT_STALL_AFTER_S, STATUS_EVERY_S, Watchdog
from tests.deploy.notify_socket import NotifySocket


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket.path(tmp_path) if request.param == "path" else NotifySocket.abstract()
    yield sock
    sock.close()


def test_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@kerbline/x") == "\0kerbline/x"
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


def test_notifications_reach_the_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": notify_socket.env})
    assert notifier.enabled
    assert notifier.ready("starting done")
    assert notifier.watchdog()
    assert notifier.status("backlog=3\nmqtt=up")
    assert notifier.stopping()
    got = [notify_socket.next(2.0) for _ in range(4)]
    assert [n.fields for n in got] == [
        {"READY": "1", "STATUS": "starting done"},
        {"WATCHDOG": "1"},
        {"STATUS": "backlog=3 mqtt=up"},  # one line: a newline would start a new KEY=VALUE
        {"STOPPING": "1"},
    ]
    assert notifier.sent == 4 and notifier.dropped == 0
    notifier.close()


def test_no_socket_is_a_no_op() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready() and notifier.watchdog() and notifier.stopping()
    assert notifier.sent == 0 and notifier.dropped == 0


def test_unknown_address_form_is_refused_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "gateway.sdnotify"):
        notifier = Notifier("vsock:2:1234")
    assert not notifier.enabled
    assert "NOTIFY_SOCKET not understood" in caplog.text


def test_supervisor_gone_drops_and_counts_then_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "notify.sock"
    notifier = Notifier(str(path))
    with caplog.at_level(logging.INFO, "gateway.sdnotify"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
        receiver = NotifySocket.path(tmp_path)
        assert notifier.watchdog()
    assert notifier.dropped == 2 and notifier.sent == 1
    lines = [r.getMessage() for r in caplog.records]
    # one line when it starts failing, one when it works again, not one per dropped datagram
    assert lines == ["cannot notify systemd; notifications dropped until it listens again", "notifying systemd again"]
    assert receiver.next(2.0)
    receiver.close()
    notifier.close()


def test_full_queue_never_blocks(tmp_path: Path) -> None:
    receiver = NotifySocket.path(tmp_path)  # never read while sending
    notifier = Notifier(receiver.env)
    results = [notifier.status("x" * 1000) for _ in range(10_000)]
    assert False in results  # the queue filled up and the sender went on instead of waiting
    assert notifier.dropped == results.count(False) and notifier.sent == results.count(True)
    receiver.close()
    notifier.close()


def test_status_is_bounded() -> None:
    assert len(one_line("y" * 5000)) == 1024
    assert one_line("a\nb\r\nc") == "a b c"


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": me}) == 4.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_pings_only_while_every_stage_progresses(notify_socket: NotifySocket,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    ages = {"loop": 0.5, "mqtt": 1.0, "sink:platform": 0.0}
    dog = Watchdog(Notifier(notify_socket.env), lambda: ages, lambda: "backlog=7 mqtt=up", interval_s=4.0)
    assert dog.period_s == 2.0 and dog.stall_after_s == 4.0

    assert dog.tick()
    assert notify_socket.next(2.0).fields == {"WATCHDOG": "1", "STATUS": "backlog=7 mqtt=up"}

    ages["sink:platform"] = 4.0  # at the bound: still pinging
    assert dog.tick()
    assert "WATCHDOG" in notify_socket.next(2.0)

    ages["sink:platform"] = 5.0  # past it
    with caplog.at_level(logging.INFO, "gateway.watchdog"):
        assert not dog.tick()
        assert not dog.tick()  # logged once, not on every round
        note = notify_socket.next(2.0)
        assert "WATCHDOG" not in note
        assert note.get("STATUS") == "stalled: sink:platform 5 s; backlog=7 mqtt=up"
        notify_socket.next(2.0)

        ages["sink:platform"] = 0.0  # it moved again: pings resume
        assert dog.tick()
    assert "WATCHDOG" in notify_socket.next(2.0)
    messages = [(r.levelname, r.getMessage(), getattr(r, "kerbline_fields")["stage"]) for r in caplog.records]
    assert messages == [
        ("ERROR", "stage made no progress; watchdog pings stop, so systemd restarts the gateway", "sink:platform"),
        ("WARNING", "stage moving again; watchdog pings resume", "sink:platform"),
    ]
    assert dog.pings == 3


def test_stalls_are_listed_most_idle_first() -> None:
    ages = {"serial": 50.0, "sink:platform": 90.0, "mqtt": 0.2}
    dog = Watchdog(Notifier(None), lambda: ages, lambda: "", interval_s=30.0)
    assert [(s.stage, s.idle_s) for s in dog.stalls()] == [("sink:platform", 90.0), ("serial", 50.0)]


def test_stall_bound_without_a_watchdog_interval() -> None:
    assert Watchdog(Notifier(None), dict, str, interval_s=None).stall_after_s == DEFAULT_STALL_AFTER_S
    assert Watchdog(Notifier(None), dict, str, interval_s=30.0, stall_after_s=90.0).stall_after_s == 90.0


def test_without_watchdog_interval_only_status_is_sent(notify_socket: NotifySocket) -> None:
    dog = Watchdog(Notifier(notify_socket.env), lambda: {}, lambda: "backlog=0", interval_s=None)
    assert dog.period_s == STATUS_EVERY_S
    assert not dog.tick()
    assert notify_socket.next(2.0).fields == {"STATUS": "backlog=0"}


async def test_ready_then_pings_on_the_loop_then_stopping(notify_socket: NotifySocket) -> None:
    """The pinger is a task on the event loop: READY, pings every period, none after STOPPING."""
    env = {"NOTIFY_SOCKET": notify_socket.env, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    dog = Watchdog.from_environment(lambda: {"loop": 0.0},
                                    lambda: "backlog=0", environ=env)
    assert dog.interval_s == 0.2 and dog.period_s == 0.1
    dog.ready()
    await asyncio.sleep(0.35)
    dog.stopping()
    await asyncio.sleep(0.25)
    got = await asyncio.to_thread(notify_socket.collect, 0.3)
    kinds = [("READY" in n) * "ready" or ("WATCHDOG" in n) * "ping" or ("STOPPING" in n) * "stop" for n in got]
    assert kinds[0] == "ready" and kinds[-1] == "stop"
    assert kinds.count("ping") >= 2 and set(kinds[1:-1]) == {"ping"}
    dog.close()


async def test_a_blocked_loop_stops_the_pings(notify_socket: NotifySocket) -> None:
    """A loop stuck in synchronous code runs no pinger: the gap is as long as the block."""
    env = {"NOTIFY_SOCKET": notify_socket.env, "WATCHDOG_USEC": "200000"}
    dog = Watchdog.from_environment(lambda: {}, lambda: "", environ=env)
    listener = asyncio.ensure_future(asyncio.to_thread(notify_socket.collect, 1.2))  # reads while the loop is stuck
    dog.ready()
    await asyncio.sleep(0.15)
    time.sleep(0.6)  # the loop is blocked (a CPU-bound bug, a synchronous call that hangs)
    await asyncio.sleep(0.15)
    dog.close()
    got = await listener
    gaps = [b.at - a.at for a, b in zip(got, got[1:])]
    assert max(gaps) >= 0.6


def test_dgram_socket_type_matters(tmp_path: Path) -> None:
    """systemd's socket is SOCK_DGRAM; a stream socket at the address is a failure, not a hang."""
    path = tmp_path / "stream.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    notifier = Notifier(str(path))
    assert not notifier.ready()
    assert notifier.dropped == 1
    server.close()
    notifier.close()
