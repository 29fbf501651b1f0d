"""The MQTT layer's batch hooks: `on_read_end` closes each socket read's PUBLISHes (the ingest hands the
spool one batch per read), and `puback_many` acknowledges a batch in order, against a real TCP peer."""
from __future__ import annotations

import asyncio

from gateway.ingest.mqtt5 import CONNACK, PUBLISH, ConnectOptions, MqttConnection, packet


def publish(topic: bytes, pid: int, payload: bytes) -> bytes:
    return packet(PUBLISH, 0x02, len(topic).to_bytes(2, "big") + topic + pid.to_bytes(2, "big") + b"\x00" + payload)


async def test_publishes_of_a_read_are_closed_by_one_read_end_and_acked_together() -> None:
    acks: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(packet(CONNACK, 0, b"\x00\x00\x00"))
        writer.write(b"".join(publish(b"kerbline/v1/bin-0042/up", pid, b"r%d" % pid) for pid in (7, 8, 9)))
        await writer.drain()
        acks.set_result(await reader.readexactly(12))
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events: list[object] = []
    conn = await MqttConnection.open("127.0.0.1", port, ConnectOptions("t", keepalive_s=0),
                                     lambda topic, payload, pid, dup: events.append(pid),
                                     on_read_end=lambda: events.append("end"))
    while events.count(7) + events.count(8) + events.count(9) < 3:
        await asyncio.sleep(0.01)
    pids = [e for e in events if e != "end"]
    assert pids == [7, 8, 9]
    assert events[-1] == "end"  # every PUBLISH is followed by the end of its read
    conn.puback_many([9, 7])
    conn.puback_many([])  # nothing to send: no packet
    conn.puback(8)
    assert await asyncio.wait_for(acks, 5) == b"\x40\x02\x00\x09" b"\x40\x02\x00\x07" b"\x40\x02\x00\x08"
    conn.abort()
    server.close()
