"""A lean asyncio MQTT 3.1.1 client for the fleet: QoS 1 publishes pipelined on one socket, PUBACKs by packet id.

Why its own client: chosen on figures measured by bench/sim_fleet.py in one run against the same
mosquitto (QoS 1, 86-byte reports, every PUBACK awaited; 2 shared cores): this client about 90,000-
120,000 msg/s on one connection, gmqtt 80,000-90,000, paho-mqtt 2 about 15,000 (its network thread and
per-message bookkeeping), aiomqtt 2 about 8,000-11,000 (paho underneath, a future per message). The
fleet needs 10,000 reports/s *plus* the firmware and world work that makes them, so the client must cost
a small fraction of a report: paho and aiomqtt would eat the whole budget; gmqtt would do, but is a
general client with its own storage and retry machinery the fleet does not use, and a dependency. This
one does only what the fleet needs: CONNECT (client id, user name, password, keepalive, optional will),
PUBLISH QoS 1 written straight into one output buffer that is flushed once per event-loop turn (many
publishes per write() system call), or by the owner when it says so (`autoflush=False`: the fleet writes
each connection once after a round of publishes, without scheduling a callback per connection), a
PUBACK parser that resolves packet ids, SUBSCRIBE, incoming PUBLISH (commands) with their PUBACK,
PINGREQ on idle, and the connection's loss.

Bounds: at most `max_inflight` unacknowledged publishes per connection (`publish()` returns False past
it, and the caller keeps the report queued); the output buffer is bounded by asyncio's flow control:
while the transport is paused `writable` is clear and `publish()` returns False. An incoming packet
longer than `max_packet` drops the connection (`MqttError`), never an unbounded buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, cast

CONNECT_TIMEOUT_S = 10.0
MAX_PACKET = 4096
_CONNACK = 2
_PUBLISH = 3
_PUBACK = 4
_SUBACK = 9
_PINGRESP = 13
_REFUSED = {1: "bad protocol version", 2: "client id rejected", 3: "server unavailable",
            4: "bad user name or password", 5: "not authorized"}


class MqttError(Exception):
    """The broker refused or broke the protocol."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def remaining_length(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """The remaining length of a packet whose length bytes start at `at`: (length, index after them), or
    None when `buf` ends first; MqttError past the 4 bytes MQTT allows."""
    length = shift = 0
    i = at
    while i < len(buf):
        byte = buf[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return length, i
        shift += 7
        if shift > 21:
            raise MqttError("malformed remaining length")
    return None


def _text(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive: int, clean: bool,
                   will: tuple[bytes, bytes] | None = None) -> bytes:
    flags = 0x02 if clean else 0
    body = bytearray(b"\x00\x04MQTT\x04")
    payload = bytearray(_text(client_id.encode()))
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
        payload += _text(will[0]) + _text(will[1])
    if username is not None:
        flags |= 0x80
        payload += _text(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _text(password.encode())
    body.append(flags)
    body += keepalive.to_bytes(2, "big")
    body += payload
    return b"\x10" + _length(len(body)) + bytes(body)


class MqttConnection(asyncio.Protocol):
    """One connection. `await open(...)`; `publish()`; `close()`. Callbacks:
    on_ack(token) when a publish is acknowledged, on_message(topic, payload) for incoming PUBLISH,
    on_lost(exc) once when the connection ends (tokens still in flight are not acknowledged).
    `autoflush=False`: publishes wait in the output buffer until `flush()` (the protocol's own packets,
    PUBACKs and PINGREQs, are still written at the next loop turn)."""

    def __init__(self, on_ack: Callable[[Any], None], on_message: Callable[[bytes, bytes], None] | None = None,
                 on_lost: Callable[[Exception | None], None] | None = None, max_inflight: int = 1000,
                 max_packet: int = MAX_PACKET, autoflush: bool = True) -> None:
        self.on_ack = on_ack
        self.autoflush = autoflush
        self.on_message = on_message
        self.on_lost = on_lost
        self.max_inflight = min(max_inflight, 65535)
        self.max_packet = max_packet
        self.in_flight: dict[int, Any] = {}
        self.connected = False
        self.writable = asyncio.Event()
        self.published = 0
        self.acked = 0
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out = bytearray()
        self._flush_scheduled = False
        self._next_pid = 1
        self._connack: asyncio.Future[int] | None = None
        self._suback: asyncio.Future[bytes] | None = None
        self._keepalive = 60
        self._ping: asyncio.TimerHandle | None = None
        self._idle = True
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, host: str, port: int, client_id: str, username: str | None = None,
                   password: str | None = None, keepalive: int = 60, clean: bool = True,
                   will: tuple[bytes, bytes] | None = None, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and wait for CONNACK; MqttError if refused, OSError/TimeoutError if unreachable."""
        loop = self._loop = asyncio.get_running_loop()
        self._keepalive = keepalive
        self._connack = loop.create_future()
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port), timeout)
        assert self._transport is not None
        self._transport.write(connect_packet(client_id, username, password, keepalive, clean, will))
        try:
            code = await asyncio.wait_for(self._connack, timeout)
        except BaseException:
            self.close()
            raise
        if code:
            self.close()
            raise MqttError(f"connection refused: {_REFUSED.get(code, code)}")
        self.connected = True
        self.writable.set()
        self._schedule_ping()

    async def subscribe(self, topic_filter: bytes, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """SUBSCRIBE at QoS 1 and wait for the SUBACK; MqttError when refused."""
        assert self._loop is not None and self._transport is not None
        self._suback = self._loop.create_future()
        pid = self._pid()
        body = pid.to_bytes(2, "big") + _text(topic_filter) + b"\x01"
        self._write(b"\x82" + _length(len(body)) + body)
        granted = await asyncio.wait_for(self._suback, timeout)
        if granted[-1:] == b"\x80":
            raise MqttError(f"subscription to {topic_filter.decode()} refused")

    def publish(self, topic: bytes, payload: bytes, token: Any, dup: bool = False, retain: bool = False,
                qos: int = 1) -> bool:
        """Queue one PUBLISH (QoS 1: `on_ack(token)` at its PUBACK). False when not sent: not connected,
        paused by flow control, or `max_inflight` reached."""
        if not self.connected or not self.writable.is_set():
            return False
        if qos == 0:
            body = _text(topic) + payload
            self._write(bytes((0x30 | retain,)) + _length(len(body)) + body)
            return True
        in_flight = self.in_flight
        if len(in_flight) >= self.max_inflight:
            return False
        pid = self._pid()
        in_flight[pid] = token
        out = self._out
        out.append(0x32 | (0x08 if dup else 0) | retain)
        out += _length(len(topic) + 4 + len(payload))
        out += len(topic).to_bytes(2, "big")
        out += topic
        out += pid.to_bytes(2, "big")
        out += payload
        self.published += 1
        self._idle = False
        if self.autoflush and not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return True

    def _pid(self) -> int:
        pid = self._next_pid
        while pid in self.in_flight:
            pid = pid % 65535 + 1
        self._next_pid = pid % 65535 + 1
        return pid

    def _write(self, data: bytes) -> None:
        self._out += data
        self._idle = False
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write out what is buffered, now."""
        if self._out:
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(bytes(self._out))
            self._out.clear()

    def close(self) -> None:
        """Send DISCONNECT and close (in-flight publishes are abandoned)."""
        if self._transport is not None and not self._transport.is_closing():
            if self.connected:
                self.flush()
                self._transport.write(b"\xe0\x00")
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT (the broker publishes the will)."""
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport, though not necessarily asyncio's class (uvloop's is its own)
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.connected
        self.connected = False
        self.writable.clear()
        if self._ping is not None:
            self._ping.cancel()
        for fut in (self._connack, self._suback):
            if fut is not None and not fut.done():
                fut.set_exception(exc or ConnectionResetError("connection closed"))
        if was and self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        if self.connected:
            self.writable.set()

    def data_received(self, data: bytes) -> None:
        self._idle = False
        buf = self._buf
        buf += data
        at = 0
        end = len(buf)
        try:
            while end - at >= 2:
                first = buf[at]
                if first == 0x40 and buf[at + 1] == 2:  # PUBACK, the common case
                    if end - at < 4:
                        break
                    self._puback(buf[at + 2] << 8 | buf[at + 3])
                    at += 4
                    continue
                got = remaining_length(buf, at + 1)
                if got is None:
                    return self._keep(at)
                length, i = got
                if length > self.max_packet:
                    raise MqttError(f"incoming packet of {length} bytes (max {self.max_packet})")
                if end - i < length:
                    break
                self._packet(first, bytes(buf[i:i + length]))
                at = i + length
        except MqttError:
            self.abort()
            buf.clear()
            return None
        return self._keep(at)

    def _keep(self, at: int) -> None:
        del self._buf[:at]

    def _puback(self, pid: int) -> None:
        token = self.in_flight.pop(pid, None)
        if token is not None:
            self.acked += 1
            self.on_ack(token)

    def _packet(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == _PUBACK and len(body) >= 2:
            self._puback(int.from_bytes(body[:2], "big"))
        elif kind == _CONNACK:
            if self._connack is not None and not self._connack.done() and len(body) >= 2:
                self._connack.set_result(body[1])
        elif kind == _SUBACK:
            if self._suback is not None and not self._suback.done():
                self._suback.set_result(body)
        elif kind == _PUBLISH:
            n = int.from_bytes(body[:2], "big")
            topic, at = body[2:2 + n], 2 + n
            if first & 0x06:
                pid = int.from_bytes(body[at:at + 2], "big")
                at += 2
                self._write(b"\x40\x02" + pid.to_bytes(2, "big"))
            if self.on_message is not None:
                self.on_message(topic, body[at:])
        elif kind != _PINGRESP:
            raise MqttError(f"unexpected packet type {kind}")

    def _schedule_ping(self) -> None:
        if self._loop is None or self._keepalive <= 0:
            return
        self._idle = True
        self._ping = self._loop.call_later(self._keepalive / 2, self._maybe_ping)

    def _maybe_ping(self) -> None:
        if not self.connected:
            return
        if self._idle:
            self._write(b"\xc0\x00")
        self._schedule_ping()
