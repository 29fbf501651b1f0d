"""Commands to devices (config, time, reboot, ping) and what became of each: the delivery status.

    queued ──(device reachable: sealed with its key, next cid, written to its link)──▶ sent
    sent ──(the device's reports show the effect)──▶ effected
    queued/sent ──(command_ttl_s passed, or MAX_SENDS sends without effect)──▶ expired / failed

A device does not answer commands; what it does next shows whether it got one ("acked by effect"):
- `ping`: the device answers with a report, so any report that arrives after the send;
- `time`: a report carrying a sane device time (its clock is set);
- `reboot`: a report from a later boot;
- `config`: a report that arrives after the send (the device applies a command before it builds its
  next report; the settings themselves are not echoed, so this shows receipt, not the values).
A command sent whose effect has not shown when the device's next report arrives is sent again with the
same cid (a device ignores a cid it has already applied, so a repeat is harmless), at most MAX_SENDS
times. Devices that sleep between reports (bins) are reached right after a report, while they listen.

Bounds: at most `max_per_device` commands are kept per device; finished ones (effected, failed, expired)
are dropped oldest first to make room, and with that many still open a new one is refused.
"""
from __future__ import annotations

import enum
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.wire import Command, Report, encode_command

OPS = ("config", "time", "reboot", "ping")
MAX_SENDS = 3


class Status(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    EFFECTED = "effected"
    FAILED = "failed"
    EXPIRED = "expired"


OPEN = (Status.QUEUED, Status.SENT)


class CommandRefused(ValueError):
    """The command cannot be accepted: a bad op or args, or an unknown device."""


class TooManyCommands(CommandRefused):
    """The device already has its maximum of open commands."""


@dataclass
class CommandEntry:
    id: int
    device: str
    op: str
    args: dict[str, Any]
    created: float
    status: Status = Status.QUEUED
    cid: int | None = None
    message: bytes | None = field(default=None, repr=False)  # the sealed command, kept for resends
    sends: int = 0
    sent_at: float | None = None
    boot_at_send: int | None = None
    done_at: float | None = None
    link: str | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "device": self.device, "op": self.op, "args": self.args, "status": self.status.value,
                "cid": self.cid, "created": self.created, "sent_at": self.sent_at, "sends": self.sends,
                "done_at": self.done_at, "link": self.link, "error": self.error}


class CommandBook:
    def __init__(self, ttl_s: float, max_per_device: int) -> None:
        self.ttl_s = ttl_s
        self.max_per_device = max_per_device
        self._by_device: dict[str, deque[CommandEntry]] = {}
        self._ids = itertools.count(1)
        self.finished: dict[str, int] = {}  # "op/status" -> count, for metrics

    def submit(self, device: str, op: str, args: dict[str, Any] | None) -> CommandEntry:
        """Queue a command; CommandRefused when the device would refuse it or too many are open."""
        args = dict(args or {})
        if op not in OPS:
            raise CommandRefused(f"op must be one of {', '.join(OPS)}")
        if op == "time" and not args:
            args = {"time": 0}  # filled in with the gateway's clock when it is sent
        try:
            encode_command(Command(0, op, args))
        except (ValueError, TypeError) as exc:
            raise CommandRefused(str(exc)) from None
        entries = self._by_device.setdefault(device, deque())
        if len(entries) >= self.max_per_device:
            done = next((e for e in entries if e.status not in OPEN), None)
            if done is None:
                raise TooManyCommands(f"{device} already has {self.max_per_device} commands open")
            entries.remove(done)
        entry = CommandEntry(next(self._ids), device, op, args, time.time())
        entries.append(entry)
        return entry

    def open(self, device: str) -> list[CommandEntry]:
        """Queued commands, and sent ones without effect yet."""
        return [e for e in self._by_device.get(device, ()) if e.status in OPEN]

    def due(self, device: str, resend: bool) -> list[CommandEntry]:
        """Commands to write now: the queued ones, plus (after a report showed no effect) the sent ones."""
        return [e for e in self._by_device.get(device, ())
                if e.status is Status.QUEUED or (resend and e.status is Status.SENT)]

    def has_any(self, device: str) -> bool:
        return bool(self._by_device.get(device))

    def has_open(self, device: str) -> bool:
        return any(e.status in OPEN for e in self._by_device.get(device, ()))

    def to_wire(self, entry: CommandEntry, cid: int) -> Command:
        """The command as it goes out the first time (a `time` gets the gateway's clock now)."""
        args = {"time": int(time.time())} if entry.op == "time" else entry.args
        entry.cid = cid
        return Command(cid, entry.op, args)

    def sent(self, entry: CommandEntry, message: bytes, link: str, boot: int | None) -> None:
        entry.message = message
        entry.sends += 1
        entry.sent_at = time.time()
        entry.link = link
        entry.status = Status.SENT
        if entry.boot_at_send is None:  # unknown at the first send (device not seen yet): the next send's
            entry.boot_at_send = boot

    def _finish(self, entry: CommandEntry, status: Status, error: str | None = None) -> None:
        entry.status = status
        entry.done_at = time.time()
        entry.error = error
        key = f"{entry.op}/{status.value}"
        self.finished[key] = self.finished.get(key, 0) + 1

    def observe(self, report: Report, arrival_s: float, time_sane: bool) -> None:
        """A report arrived: mark the effects it shows; a sent command still without effect after
        MAX_SENDS sends has failed."""
        for entry in self._by_device.get(report.device, ()):
            if entry.status is not Status.SENT or entry.sent_at is None or arrival_s < entry.sent_at:
                continue
            if entry.op == "reboot":
                done = entry.boot_at_send is not None and report.boot > entry.boot_at_send
            elif entry.op == "time":
                done = time_sane
            else:
                done = True
            if done:
                self._finish(entry, Status.EFFECTED)
            elif entry.sends >= MAX_SENDS:
                self._finish(entry, Status.FAILED, f"no effect after {entry.sends} sends")

    def expire(self, now: float) -> list[CommandEntry]:
        """Open commands older than the TTL become expired; returns them."""
        gone = []
        for entries in self._by_device.values():
            for entry in entries:
                if entry.status in OPEN and now - entry.created > self.ttl_s:
                    self._finish(entry, Status.EXPIRED, "device not reached in time")
                    gone.append(entry)
        return gone

    def fail(self, entry: CommandEntry, error: str) -> None:
        self._finish(entry, Status.FAILED, error)

    def get(self, device: str, command_id: int) -> CommandEntry | None:
        return next((e for e in self._by_device.get(device, ()) if e.id == command_id), None)

    def list(self, device: str) -> list[dict[str, Any]]:
        return [e.public() for e in self._by_device.get(device, ())]
