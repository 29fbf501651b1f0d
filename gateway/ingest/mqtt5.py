"""A lean MQTT 5 client connection on asyncio's Protocol API: the gateway's hot path for reports.

Why our own (measured in bench/gateway_e2e.py, figures in docs/gateway.md): the ingest must PUBACK a
report only after the spool has committed it, at 20,000 reports/s on one core. aiomqtt acknowledges on
receipt; paho-mqtt can delay the ack (`manual_ack`) but spends ~100 us of Python per message in its
threaded loop; gmqtt acks on receipt. This layer does only what the ingest needs, per message:
one slice for the topic, one for the payload, one callback; then one `on_read_end` callback per socket
read (so the owner can hand everything that read yielded on as one batch), and PUBACKs appended to a
write buffer flushed once per event-loop turn (`puback_many` packs a batch's in one call).

What it speaks (MQTT 5.0, OASIS standard):
- CONNECT with clean start off and a Session Expiry Interval, so the broker keeps our subscription and
  queues reports while the gateway is down; Receive Maximum (how many unacknowledged QoS 1 messages the
  broker may have in flight to us: with the ack after the commit, this window is what allows
  throughput); Maximum Packet Size (the broker drops and counts larger messages instead of sending
  them); Topic Alias Maximum left at 0, so every PUBLISH names its topic. User name, password and TLS
  are optional.
- SUBSCRIBE (QoS 1, SUBACK reason codes checked), PUBLISH in (QoS 0/1; QoS 2 is refused by
  subscribing at QoS 1, so the broker downgrades), PUBACK out when the owner calls `puback`.
- PUBLISH out at QoS 0 or 1 (commands to devices), each QoS 1 resolved by its PUBACK, at most the
  broker's Receive Maximum in flight (`publish` waits for room).
- PINGREQ when nothing was sent for the keepalive; no answer within it closes the connection. A
  DISCONNECT from the broker closes it with the broker's reason.

Bounds: a packet whose remaining length exceeds `max_packet` is a protocol error (the broker was told our
limit) and closes the connection; the receive buffer therefore never holds more than one such packet
plus one read. Packet ids of PUBACKs are tied to this connection: a PUBACK for a report received on a
connection that has since closed is dropped (the broker resends the report on the next connection).
"""
from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# packet types (high nibble of the first byte)
CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

# property identifiers used here
P_SESSION_EXPIRY = 0x11
P_RECEIVE_MAXIMUM = 0x21
P_MAXIMUM_PACKET = 0x27
P_SERVER_KEEP_ALIVE = 0x13
P_REASON_STRING = 0x1F

# property id -> wire type, for reading a broker's properties (MQTT 5.0 section 2.2.2.2)
_BYTE, _U16, _U32, _VARINT, _TEXT, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _TEXT, 0x08: _TEXT, 0x09: _BINARY, 0x0B: _VARINT, 0x11: _U32,
    0x12: _TEXT, 0x13: _U16, 0x15: _TEXT, 0x16: _BINARY, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE,
    0x1A: _TEXT, 0x1C: _TEXT, 0x1F: _TEXT, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _U32, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}

_REASONS = {
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
    0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
    0x8C: "bad authentication method", 0x8D: "keep alive timeout", 0x8E: "session taken over",
    0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x93: "receive maximum exceeded",
    0x94: "topic alias invalid", 0x95: "packet too large", 0x97: "quota exceeded",
    0x99: "payload format invalid", 0x9A: "retain not supported", 0x9B: "QoS not supported",
    0x9C: "use another server", 0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}

_PINGREQ = b"\xc0\x00"
_DISCONNECT_NORMAL = b"\xe0\x00"


class MqttError(ConnectionError):
    """The connection failed or was refused; `code` is the MQTT reason code when the broker gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def reason_text(code: int) -> str:
    return _REASONS.get(code, f"reason 0x{code:02x}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack(">H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """A whole control packet: fixed header (type, flags, remaining length) and `body`."""
    return bytes(((kind << 4) | flags,)) + _varint(len(body)) + body


def read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, next position) of a variable byte integer, None if `data` ends inside it.

    Raises MqttError for an encoding longer than 4 bytes (a malformed packet)."""
    value = shift = 0
    for i in range(4):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MqttError("malformed packet: variable length over 4 bytes", 0x81)


def parse_properties(data: bytes, pos: int) -> tuple[dict[int, object], int]:
    """The property block at `pos` as {id: value} (pairs as a list), and the position after it."""
    parsed = read_varint(data, pos)
    if parsed is None:
        raise MqttError("malformed packet: truncated properties", 0x81)
    length, pos = parsed
    end = pos + length
    if end > len(data):
        raise MqttError("malformed packet: properties run past the packet", 0x81)
    props: dict[int, object] = {}
    while pos < end:
        pid = data[pos]
        kind = _PROPERTY_TYPES.get(pid)
        pos += 1
        if kind is None:
            raise MqttError(f"malformed packet: unknown property 0x{pid:02x}", 0x81)
        value: object
        if kind == _BYTE:
            value, pos = data[pos], pos + 1
        elif kind == _U16:
            value, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif kind == _U32:
            value, pos = int.from_bytes(data[pos:pos + 4], "big"), pos + 4
        elif kind == _VARINT:
            got = read_varint(data, pos)
            if got is None:
                raise MqttError("malformed packet: truncated property", 0x81)
            value, pos = got
        else:
            n = int.from_bytes(data[pos:pos + 2], "big")
            first = data[pos + 2:pos + 2 + n]
            pos += 2 + n
            if kind == _PAIR:
                m = int.from_bytes(data[pos:pos + 2], "big")
                value = (first.decode("utf-8", "replace"), data[pos + 2:pos + 2 + m].decode("utf-8", "replace"))
                pos += 2 + m
                props.setdefault(pid, [])
                props[pid].append(value)  # type: ignore[attr-defined]
                continue
            value = first.decode("utf-8", "replace") if kind == _TEXT else bytes(first)
        props[pid] = value
    if pos != end:
        raise MqttError("malformed packet: property overruns its block", 0x81)
    return props, end


@dataclass(frozen=True)
class ConnectOptions:
    """What CONNECT says. `password` is never shown (repr=False)."""

    client_id: str
    keepalive_s: int = 30
    session_expiry_s: int = 0
    receive_maximum: int = 65535
    max_packet: int = 65536
    clean_start: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def encode(self) -> bytes:
        flags = 0x02 if self.clean_start else 0
        if self.username is not None:
            flags |= 0x80
        if self.password is not None:
            flags |= 0x40
        props = (bytes((P_SESSION_EXPIRY,)) + struct.pack(">I", self.session_expiry_s)
                 + bytes((P_RECEIVE_MAXIMUM,)) + struct.pack(">H", self.receive_maximum)
                 + bytes((P_MAXIMUM_PACKET,)) + struct.pack(">I", self.max_packet))
        body = bytearray(_text("MQTT") + bytes((5, flags)) + struct.pack(">H", self.keepalive_s))
        body += _varint(len(props)) + props
        body += _text(self.client_id)
        if self.username is not None:
            body += _text(self.username)
        if self.password is not None:
            body += _text(self.password)
        return packet(CONNECT, 0, bytes(body))


# on_publish(topic bytes, payload bytes, packet id (0 for QoS 0), dup flag)
PublishHandler = Callable[[bytes, bytes, int, bool], None]
# on_read_end(): after every PUBLISH of one socket read was passed to on_publish
ReadEndHandler = Callable[[], None]


class MqttConnection(asyncio.Protocol):
    """One MQTT 5 connection. Use `await MqttConnection.open(...)`, then `subscribe`, `publish`,
    `puback`; `closed` resolves (with the reason as an exception or None) when it ends."""

    def __init__(self, options: ConnectOptions, on_publish: PublishHandler,
                 on_read_end: ReadEndHandler | None = None) -> None:
        self.options = options
        self._on_publish = on_publish
        self._on_read_end = on_read_end
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out = bytearray()
        self._flush_scheduled = False
        self._connack: asyncio.Future[tuple[bool, dict[int, object]]] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}  # packet id -> SUBACK/PUBACK body
        self._next_pid = 0
        self._room = asyncio.Semaphore(65535)  # replaced by the broker's Receive Maximum at CONNACK
        self._last_out = self._last_in = time.monotonic()
        self._keepalive = options.keepalive_s
        self._ping_task: asyncio.Task[None] | None = None
        self._pinged = False
        self.session_present = False
        self.broker_max_packet = 1 << 28
        self.received = 0  # PUBLISH packets received on this connection
        self.close_reason = ""

    # --- opening and closing ------------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int, options: ConnectOptions, on_publish: PublishHandler, *,
                   on_read_end: ReadEndHandler | None = None, ssl_context: ssl.SSLContext | None = None,
                   timeout: float = 10.0) -> MqttConnection:
        """Connect, send CONNECT and wait for CONNACK; MqttError (or OSError) if that fails."""
        conn = cls(options, on_publish, on_read_end)
        await conn.connect(host, port, ssl_context=ssl_context, timeout=timeout)
        return conn

    async def connect(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      timeout: float = 10.0) -> None:
        """`open` in two steps, for a caller whose handlers must name this connection: a broker with a
        stored session sends its queued PUBLISHes right after CONNACK, before `open` could return."""
        loop = self._loop
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: self, host, port, ssl=ssl_context,
                                         server_hostname=host if ssl_context is not None else None)
            self._send(self.options.encode())
            try:
                session_present, props = await asyncio.shield(self._connack)
            except BaseException:
                self.abort()
                raise
        self.session_present = session_present
        self._room = asyncio.Semaphore(_int(props.get(P_RECEIVE_MAXIMUM), 65535))
        self.broker_max_packet = _int(props.get(P_MAXIMUM_PACKET), 1 << 28)
        self._keepalive = _int(props.get(P_SERVER_KEEP_ALIVE), self.options.keepalive_s)
        if self._keepalive:
            self._ping_task = loop.create_task(self._keep_alive())

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self.closed.done()

    async def disconnect(self) -> None:
        """Send DISCONNECT (normal: the session stays, no will) and close."""
        if self.is_open:
            self._send(_DISCONNECT_NORMAL)
            self._flush()
            assert self._transport is not None
            self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5.0)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing: any end will do
            self.abort()

    def pause_reading(self) -> None:
        """Take no more packets (PUBACKs and other writes still go out): the first step of a drain."""
        if self._transport is not None:
            self._transport.pause_reading()

    def abort(self) -> None:
        """Drop the connection now, without DISCONNECT."""
        if self._transport is not None:
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        error = exc if exc is not None else MqttError("connection closed")
        self._end(error)

    def _end(self, error: BaseException) -> None:
        if self._ping_task is not None:
            self._ping_task.cancel()
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved: `open` may have stopped waiting
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(MqttError(f"connection closed: {error}"))
        self._waiting.clear()
        if not self.closed.done():
            self.closed.set_result(None)
            self.close_reason = str(error)
        self._transport = None

    def _fail(self, message: str, code: int | None = None) -> None:
        """A protocol error by the broker: close at once."""
        self._end(MqttError(message, code))
        self.abort()

    # --- sending ------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._out += data
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None:
            self._transport.write(bytes(self._out))
            self._last_out = time.monotonic()
        self._out.clear()

    def puback(self, pid: int) -> None:
        """Acknowledge the QoS 1 message `pid` received on this connection (no-op once closed)."""
        if self._transport is not None:
            self._send(b"\x40\x02" + pid.to_bytes(2, "big"))

    def puback_many(self, pids: list[int]) -> None:
        """`puback` for each of `pids`, in order, packed in one call (a batch's acknowledgements)."""
        if self._transport is not None and pids:
            self._send(struct.pack(f">{len(pids)}I", *[0x40020000 | pid for pid in pids]))

    def _new_pid(self) -> int:
        for _ in range(65535):
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self._waiting:
                return self._next_pid
        raise MqttError("no free packet id")

    async def subscribe(self, filters: list[str], qos: int = 1) -> list[int]:
        """Subscribe; returns the granted QoS per filter, MqttError if the broker refused one."""
        pid = self._new_pid()
        body = bytearray(pid.to_bytes(2, "big") + b"\x00")  # no properties
        for topic_filter in filters:
            body += _text(topic_filter) + bytes((qos,))
        future = self._expect(pid)
        self._send(packet(SUBSCRIBE, 0x02, bytes(body)))
        answer = await future
        props, pos = parse_properties(answer, 2)
        codes = list(answer[pos:])
        for topic_filter, code in zip(filters, codes):
            if code >= 0x80:
                raise MqttError(f"subscription to {topic_filter} refused: {reason_text(code)}", code)
        return codes

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish; at QoS 1 returns when the broker's PUBACK arrives (MqttError if it refuses)."""
        if not self.is_open:
            raise MqttError("not connected")
        flags = (qos << 1) | (1 if retain else 0)
        if qos == 0:
            self._send(packet(PUBLISH, flags, _text(topic) + b"\x00" + payload))
            return
        async with self._room:
            if not self.is_open:
                raise MqttError("not connected")
            pid = self._new_pid()
            future = self._expect(pid)
            self._send(packet(PUBLISH, flags, _text(topic) + pid.to_bytes(2, "big") + b"\x00" + payload))
            answer = await future
        if len(answer) > 2 and answer[2] >= 0x80:
            raise MqttError(f"publish to {topic} refused: {reason_text(answer[2])}", answer[2])

    def _expect(self, pid: int) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._waiting[pid] = future
        return future

    async def _keep_alive(self) -> None:
        """PINGREQ after a keepalive of silence from our side; no PINGRESP within it ends the connection."""
        interval = self._keepalive
        while True:
            idle = time.monotonic() - self._last_out
            await asyncio.sleep(max(interval - idle, 0.05) if idle < interval else interval)
            if time.monotonic() - self._last_out < interval:
                continue
            self._pinged = True
            self._send(_PINGREQ)
            sent = time.monotonic()
            await asyncio.sleep(interval)
            if self._pinged and self._last_in <= sent:
                self._fail("no answer from the broker within the keepalive", 0x8D)
                return

    # --- receiving ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            self._read(data)
        finally:
            if self._on_read_end is not None:
                self._on_read_end()

    def _read(self, data: bytes) -> None:  # noqa: C901 - one flat loop is the hot path
        if self._buf:
            self._buf += data
            data = self._buf  # type: ignore[assignment]
        self._last_in = time.monotonic()
        size = len(data)
        pos = 0
        on_publish = self._on_publish
        limit = self.options.max_packet
        while pos + 2 <= size:
            first = data[pos]
            # remaining length, inline for the usual 1- and 2-byte cases
            b1 = data[pos + 1]
            if b1 < 0x80:
                length, start = b1, pos + 2
            else:
                got = read_varint(data, pos + 1)
                if got is None:
                    break
                length, start = got
            end = start + length
            if length > limit:
                self._fail(f"broker sent a packet of {length} bytes, over our maximum of {limit}", 0x95)
                return
            if end > size:
                break
            kind = first >> 4
            if kind == PUBLISH:
                tlen = (data[start] << 8) | data[start + 1]
                p = start + 2 + tlen
                topic = bytes(data[start + 2:p])
                if first & 0x06:
                    pid = (data[p] << 8) | data[p + 1]
                    p += 2
                else:
                    pid = 0
                plen = data[p]
                if plen < 0x80:
                    p += 1 + plen
                else:
                    got = read_varint(data, p)
                    if got is None:
                        self._fail("malformed PUBLISH properties", 0x81)
                        return
                    p = got[0] + got[1]
                if p > end:
                    self._fail("malformed PUBLISH", 0x81)
                    return
                self.received += 1
                on_publish(topic, bytes(data[p:end]), pid, bool(first & 0x08))
            else:
                self._control(kind, bytes(data[start:end]))
                if self._transport is None:
                    return
            pos = end
        if data is self._buf:
            del self._buf[:pos]
        elif pos < size:
            self._buf += data[pos:]

    def _control(self, kind: int, body: bytes) -> None:
        if kind == PUBACK or kind == SUBACK:
            if len(body) < 2:
                self._fail("malformed acknowledgement", 0x81)
                return
            future = self._waiting.pop(int.from_bytes(body[:2], "big"), None)
            if future is not None and not future.done():
                future.set_result(body)
        elif kind == PINGRESP:
            self._pinged = False
        elif kind == CONNACK:
            self._on_connack(body)
        elif kind == DISCONNECT:
            code = body[0] if body else 0
            props = parse_properties(body, 1)[0] if len(body) > 1 else {}
            why = props.get(P_REASON_STRING)
            self._fail(f"broker disconnected: {reason_text(code)}" + (f" ({why})" if why else ""), code)
        else:
            self._fail(f"unexpected packet type {kind}", 0x82)

    def _on_connack(self, body: bytes) -> None:
        if len(body) < 2 or self._connack.done():
            self._fail("malformed or repeated CONNACK", 0x81)
            return
        code = body[1]
        if code >= 0x80:
            error = MqttError(f"connection refused: {reason_text(code)}", code)
            self._connack.set_exception(error)
            self._end(error)
            self.abort()
            return
        props, _ = parse_properties(body, 2) if len(body) > 2 else ({}, 2)
        self._connack.set_result((bool(body[0] & 1), props))
