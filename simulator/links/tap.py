"""A protocol analyser on a device's link: what the device sent, what was acknowledged, decoded independently.

The simulator sits in the middle of every faithful device's link (the serial line's relay, the network
relay), so it can watch the bytes go by the way a logic analyser or Wireshark would, without touching
them. It decodes them with `gateway.wire` (the gateway's decoder, independent of the firmware's encoder)
under the device's key, and keeps per device:

- `sent`: distinct reports (boot, seq) the device put on the link; `resent`: copies of ones already seen;
- `acked`: distinct reports acknowledged (serial: the gateway's cumulative `ack` command; MQTT: the
  broker's PUBACK for the packet id that carried the report), `queued` = sent and not yet acked;
- `last`: the newest report (its readings feed the live view) and `alarms`: the alarm names it carries;
- `commands`: commands by op that reached the device's side of the link; `rejected`: messages the
  analyser could not decode, by reason (line noise decodes as bad_cobs/bad_crc; that is the point).

Bounds: at most `MAX_UNACKED` unacked reports are remembered (past it the oldest is forgotten and counted
in `forgotten`); an MQTT packet longer than `MAX_PACKET` ends the analysis of that connection
(`unparsed` counts them); a serial frame decoder holds at most one frame.
"""

from __future__ import annotations

import collections
from collections import Counter
from typing import Callable

from gateway.wire import FrameDecoder, Rejected, Report, parse_command, parse_report, verify
from simulator.fleet.mqtt import MqttError, remaining_length

MAX_UNACKED = 4096
MAX_PACKET = 65536
_PUBLISH = 3
_PUBACK = 4


class Tap:
    """The decoded traffic of one device (link-independent part)."""

    def __init__(self, device_id: str, key: bytes, on_report: Callable[[Report], None] | None = None) -> None:
        self.device_id = device_id
        self._key = key
        self.on_report = on_report
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.forgotten = 0
        self.last: Report | None = None
        self.alarms: tuple[str, ...] = ()
        self.commands: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._unacked: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self._seen: set[tuple[int, int]] = set()
        self._upto = (0, 0)  # the highest cumulative serial ack

    @property
    def queued(self) -> int:
        return len(self._unacked)

    def _lookup(self, device: str) -> bytes | None:
        return self._key if device == self.device_id else None

    def report(self, message: bytes) -> Report | None:
        """A message the device sent; the report, or None when it does not decode (counted)."""
        try:
            device, payload = verify(message, self._lookup, self.device_id)
            report = parse_report(payload, device)
        except Rejected as e:
            self.rejected[str(e.reason)] += 1
            return None
        key = (report.boot, report.seq)
        if key in self._seen or key <= self._upto:
            self.resent += 1
            return report
        self.sent += 1
        self._seen.add(key)
        self._unacked[key] = None
        if len(self._unacked) > MAX_UNACKED:
            old, _ = self._unacked.popitem(last=False)
            self._seen.discard(old)
            self.forgotten += 1
        self.last = report
        self.alarms = tuple(str(r.value) for r in report.readings if r.name == "alarm")
        if self.on_report is not None:
            self.on_report(report)
        return report

    def command(self, message: bytes) -> None:
        """A message that came to the device: a command; a cumulative `ack` acknowledges reports."""
        try:
            _, payload = verify(message, self._lookup, self.device_id)
            command = parse_command(payload)
        except Rejected as e:
            self.rejected[str(e.reason)] += 1
            return
        self.commands[command.op] += 1
        if command.op == "ack":
            upto = (int(command.args["boot"]), int(command.args["seq"]))
            self._upto = max(self._upto, upto)
            for key in [k for k in self._unacked if k <= upto]:
                self.ack(key)

    def ack(self, key: tuple[int, int]) -> None:
        if key in self._unacked:
            del self._unacked[key]
            self._seen.discard(key)
            self.acked += 1


class SerialTap:
    """Watches a serial line: COBS frames up (reports) and down (commands)."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self._up = FrameDecoder()
        self._down = FrameDecoder()

    def up(self, data: bytes) -> None:
        for item in self._up.feed(data):
            if isinstance(item, Rejected):
                self.tap.rejected[str(item.reason)] += 1
            else:
                self.tap.report(item)

    def down(self, data: bytes) -> None:
        for item in self._down.feed(data):
            if isinstance(item, Rejected):
                self.tap.rejected[str(item.reason)] += 1
            else:
                self.tap.command(item)


class _Splitter:
    """Cuts an MQTT byte stream into packets (first byte, body)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.broken:
            return []
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            buf = self._buf
            try:
                got = remaining_length(buf, 1)
            except MqttError:
                self.broken = True
                return out
            if got is None:
                return out
            length, i = got
            if length > MAX_PACKET:
                self.broken = True
                self._buf.clear()
                return out
            if len(buf) < i + length:
                return out
            out.append((buf[0], bytes(buf[i:i + length])))
            del self._buf[:i + length]


class MqttTap:
    """Watches one device's MQTT connections (device -> broker is `up`)."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.unparsed = 0
        self._conns: dict[int, tuple[_Splitter, _Splitter, dict[int, tuple[int, int]]]] = {}

    def opened(self, conn: int) -> None:
        self._conns[conn] = (_Splitter(), _Splitter(), {})

    def closed(self, conn: int) -> None:
        parts = self._conns.pop(conn, None)
        if parts is not None and (parts[0].broken or parts[1].broken):
            self.unparsed += 1

    def up(self, conn: int, data: bytes) -> None:
        parts = self._conns.get(conn)
        if parts is None:
            return
        for first, body in parts[0].feed(data):
            if first >> 4 == _PUBLISH:
                topic, pid, payload = _publish(first, body)
                if topic.endswith(b"/up"):
                    report = self.tap.report(payload)
                    if report is not None and pid is not None:
                        parts[2][pid] = (report.boot, report.seq)

    def down(self, conn: int, data: bytes) -> None:
        parts = self._conns.get(conn)
        if parts is None:
            return
        for first, body in parts[1].feed(data):
            kind = first >> 4
            if kind == _PUBACK and len(body) >= 2:
                key = parts[2].pop(int.from_bytes(body[:2], "big"), None)
                if key is not None:
                    self.tap.ack(key)
            elif kind == _PUBLISH:
                topic, _, payload = _publish(first, body)
                if topic.endswith(b"/down"):
                    self.tap.command(payload)


def _publish(first: int, body: bytes) -> tuple[bytes, int | None, bytes]:
    """(topic, packet id or None, payload) of an MQTT 3.1.1 PUBLISH body."""
    n = int.from_bytes(body[:2], "big")
    topic = body[2:2 + n]
    at = 2 + n
    pid = None
    if first & 0x06:
        pid = int.from_bytes(body[at:at + 2], "big")
        at += 2
    return topic, pid, body[at:]
