"""Load and counting tools for the gateway bench, fast enough not to be what is measured.

- `build_packets`: MQTT 3.1.1 QoS 1 PUBLISH packets carrying real sealed reports (gateway.wire.build,
  the same bytes a device sends), prebuilt before the clock starts.
- `publish_process`: one raw-socket publisher: packets written in large chunks, up to `WINDOW`
  unacknowledged, PUBACKs counted by the byte (a broker sends a publisher nothing else). Several run
  side by side as separate processes.
- `count_subscriber`: a raw-socket QoS 1 subscriber that PUBACKs at once and counts messages (the
  receiving end of the relay and forwarder measurements).
- `forwarders`: bare subscribe-and-republish forwarders (ours, paho-mqtt, gmqtt), each acknowledging a
  message once its republished copy is acknowledged, as the gateway does after its commit.
"""
from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import time
from typing import Any

import cbor2

from gateway.wire import build

WINDOW = 2000
CHUNK = 200


def fleet_key(device: str) -> bytes:
    return hashlib.sha256(b"KERBLINE FAKE FLEET KEY " + device.encode()).digest()


def fleet(n: int) -> list[str]:
    return [f"bin-{i:05d}" for i in range(n)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id: str, clean: bool = True) -> bytes:
    body = _text("MQTT") + bytes((4, 0x02 if clean else 0)) + struct.pack(">H", 60) + _text(client_id)
    return b"\x10" + _varint(len(body)) + body


def report_payload(boot: int, seq: int, now: int) -> bytes:
    records = [{0: "fill", 2: 40 + seq % 50}, {0: "dist", 2: 812}, {0: "temp", 2: 21.5}, {0: "batt", 2: 3912}]
    return cbor2.dumps({1: 1, 2: boot, 3: seq, 4: now, 6: records}, canonical=True)


def build_packets(devices: list[str], per_device: int, boot: int = 1) -> list[bytes]:
    """PUBLISH packets (QoS 1, packet ids 1..65535 cycling), devices interleaved like a live fleet."""
    now = int(time.time())
    keys = {d: fleet_key(d) for d in devices}
    packets = []
    pid = 0
    for seq in range(1, per_device + 1):
        for device in devices:
            pid = pid % 65535 + 1
            message = build(device, keys[device], report_payload(boot, seq, now))
            body = _text(f"kerbline/v1/{device}/up") + struct.pack(">H", pid) + message
            packets.append(b"\x32" + _varint(len(body)) + body)
    return packets


def _connack(sock: socket.socket) -> None:
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        if not chunk:
            raise ConnectionError("broker closed before CONNACK")
        data += chunk
    if data[0] != 0x20 or data[3] != 0:
        raise ConnectionError(f"connection refused: {data!r}")


def publish_process(host: str, port: int, client_id: str, packets: list[bytes], start_at: float,
                    rate: float | None, result: Any) -> None:
    """Publish every packet (paced at `rate` msg/s if given); put (sent, first, last ack time) in `result`."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id))
    _connack(sock)
    while time.time() < start_at:
        time.sleep(0.001)
    sent = acked = 0
    pending = b""
    first = time.time()
    total = len(packets)
    while acked < total:
        while sent < total and sent - acked < WINDOW:
            if rate is not None:
                due = first + sent / rate
                if due > time.time():
                    break
            n = min(CHUNK, total - sent, WINDOW - (sent - acked))
            sock.sendall(b"".join(packets[sent:sent + n]))
            sent += n
        sock.settimeout(0.002 if rate is not None and sent < total else None)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise ConnectionError("broker closed the publisher")
        pending += data
        n = len(pending) // 4
        acked += n
        pending = pending[n * 4:]
    result.put((total, first, time.time()))
    sock.close()


class _Counter(asyncio.Protocol):
    def __init__(self, expect: int, done: asyncio.Future[float]) -> None:
        self.expect = expect
        self.count = 0
        self.first = 0.0
        self.done = done
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, size, acks = 0, len(buf), bytearray()
        while pos + 2 <= size:
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= size:
                    break
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            end = i + length
            if end > size or i >= size and length:
                break
            if buf[pos] >> 4 == 3:
                tlen = (buf[i] << 8) | buf[i + 1]
                if buf[pos] & 0x06:
                    acks += b"\x40\x02" + bytes(buf[i + 2 + tlen:i + 4 + tlen])
                if not self.count:
                    self.first = time.time()
                self.count += 1
            pos = end
        del buf[:pos]
        if acks and self.transport is not None:
            self.transport.write(bytes(acks))
        if self.count >= self.expect and not self.done.done():
            self.done.set_result(time.time())


def count_subscriber(host: str, port: int, topic_filter: str, expect: int, ready: Any, result: Any,
                     timeout: float = 120.0) -> None:
    """Subscribe at QoS 1, count `expect` messages; put (count, first, last) in `result`."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[float] = loop.create_future()
        counter = _Counter(expect, done)
        transport, _ = await loop.create_connection(lambda: counter, host, port)
        transport.write(connect_packet(f"counter-{time.time_ns()}"))
        body = struct.pack(">H", 1) + _text(topic_filter) + b"\x01"
        transport.write(b"\x82" + _varint(len(body)) + body)
        await asyncio.sleep(0.3)
        counter.count = 0  # CONNACK and SUBACK are not PUBLISH; nothing counted yet
        ready.set()
        try:
            last = await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            last = time.time()
        result.put((counter.count, counter.first, last))
        transport.close()

    asyncio.run(main())
