"""sd_notify: tell systemd the gateway is ready, alive, stopping, and what it is doing.

systemd (`Type=notify`) passes `NOTIFY_SOCKET`, the address of a unix datagram socket; a message is one
datagram of newline-separated `KEY=VALUE` lines (`READY=1`, `WATCHDOG=1`, `STATUS=...`, `STOPPING=1`).
An address starting with `@` is in the abstract namespace (the `@` stands for a leading NUL byte). That
is the whole protocol, so it is written here instead of depending on the `sdnotify` package.

Without `NOTIFY_SOCKET` (a terminal, the tests, another supervisor) every call is a no-op. A datagram
that cannot be sent (systemd gone, its queue full: the socket never blocks) is dropped and counted; the
gateway must never stall or die because its supervisor is slow. The first failure of a run is logged,
and the recovery after it.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from gateway.logging import fields

log = logging.getLogger("gateway.sdnotify")

# systemd reads at most this much of a notification; longer STATUS texts are cut to stay well below.
_STATUS_MAX = 1024


def socket_address(value: str) -> str | None:
    """The `NOTIFY_SOCKET` value as an AF_UNIX address, or None for a form this module does not speak
    (systemd 254+ also offers `vsock:`; a gateway box has no VM sockets to talk over)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (`WATCHDOG_USEC`), in seconds, or None.

    `WATCHDOG_PID`, when present, names the process the watchdog is meant for; any other process (a
    child that inherited the environment) must not ping."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


def one_line(text: str) -> str:
    """`text` fit for a single `KEY=VALUE` line: newlines become spaces, cut at a fixed bound."""
    flat = " ".join(text.splitlines())
    return flat if len(flat) <= _STATUS_MAX else flat[: _STATUS_MAX - 3] + "..."


class Notifier:
    """Sends notifications to systemd's `NOTIFY_SOCKET`; every method is a no-op when there is none."""

    def __init__(self, address: str | None) -> None:
        self.address = socket_address(address) if address else None
        if address and self.address is None:
            log.warning("NOTIFY_SOCKET not understood; not notifying systemd", extra=fields(value=address))
        self.sent = 0
        self.dropped = 0
        self._failing = False
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `lines` (`KEY=VALUE` each) as one datagram; True when it went out (or nobody listens)."""
        if self.address is None:
            return True
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            self.dropped += 1
            if not self._failing:
                self._failing = True
                log.warning("cannot notify systemd; notifications dropped until it listens again",
                            extra=fields(error=exc.strerror or str(exc)))
            return False
        self.sent += 1
        if self._failing:
            self._failing = False
            log.info("notifying systemd again", extra=fields(dropped=self.dropped))
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *self._status(status))

    def watchdog(self, status: str | None = None) -> bool:
        return self.notify("WATCHDOG=1", *self._status(status))

    def status(self, status: str) -> bool:
        return self.notify(*self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *self._status(status))

    @staticmethod
    def _status(status: str | None) -> tuple[str, ...]:
        return () if status is None else (f"STATUS={one_line(status)}",)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
