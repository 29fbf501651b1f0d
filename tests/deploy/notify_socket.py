"""A real NOTIFY_SOCKET for the tests: the datagram socket systemd would listen on, read by the test.

`NotifySocket.path(dir)` binds a socket file; `NotifySocket.abstract()` binds a random name in the
abstract namespace. `env` is the `NOTIFY_SOCKET` value to give the process under test. Each datagram
becomes a `Notification` (its fields, and when it arrived on the monotonic clock, so the tests can
check the gaps between watchdog pings).
"""
from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Notification:
    fields: dict[str, str]
    at: float

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)


class NotifySocket:
    def __init__(self, sock: socket.socket, env: str) -> None:
        self.sock = sock
        self.env = env
        self.received: list[Notification] = []

    @classmethod
    def path(cls, folder: Path) -> NotifySocket:
        address = str(folder / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        return cls(sock, address)

    @classmethod
    def abstract(cls) -> NotifySocket:
        name = f"kerbline-test-notify-{os.getpid()}-{os.urandom(4).hex()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        return cls(sock, "@" + name)

    def receive(self, timeout: float) -> Notification | None:
        """The next datagram, or None when none came within `timeout` seconds."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return None
        data = self.sock.recv(65536)
        pairs = (line.split("=", 1) for line in data.decode("utf-8").split("\n") if line)
        note = Notification({key: value for key, value in pairs}, time.monotonic())
        self.received.append(note)
        return note

    def next(self, timeout: float) -> Notification:
        """The next datagram; AssertionError when none came within `timeout` seconds."""
        note = self.receive(timeout)
        if note is None:
            raise AssertionError(f"no notification within {timeout} s")
        return note

    def wait_for(self, match: Callable[[Notification], bool], timeout: float) -> Notification:
        """The first datagram from now on that `match`es; AssertionError (with what came) after `timeout`."""
        end = time.monotonic() + timeout
        start = len(self.received)
        while True:
            note = self.receive(end - time.monotonic())
            if note is None:
                seen = [n.fields for n in self.received[start:]][-10:]
                raise AssertionError(f"no matching notification within {timeout} s; last received: {seen}")
            if match(note):
                return note

    def collect(self, seconds: float) -> list[Notification]:
        """Every datagram that arrives in the next `seconds`."""
        end = time.monotonic() + seconds
        got = []
        while (note := self.receive(end - time.monotonic())) is not None:
            got.append(note)
        return got

    def close(self) -> None:
        self.sock.close()
