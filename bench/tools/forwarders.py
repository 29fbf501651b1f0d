"""Bare subscribe-and-republish forwarders: the baseline the gateway's rate is a ratio of.

Each subscribes `kerbline/v1/+/up` at QoS 1 with a persistent session and republishes every message at
QoS 1 to `fwd/{dev}`, and acknowledges the incoming message only once the broker has acknowledged the
republished one: the same "ack only after the next hop has it" discipline the gateway keeps with its
spool, minus the verify, spool and batching. Three client stacks, the candidates for the gateway's
ingest: our lean MQTT 5 layer (gateway.ingest.mqtt5), paho-mqtt (manual_ack) and gmqtt (it acks on
receipt and cannot delay the PUBACK, and republishes at QoS 0: an upper bound for its stack).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

SOURCE = "kerbline/v1/+/up"


def ours(host: str, port: int, ready: Any, stop_after: float) -> None:
    from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection

    async def main() -> None:
        conn: MqttConnection | None = None

        async def forward(topic: bytes, payload: bytes, pid: int) -> None:
            assert conn is not None
            await conn.publish("fwd/" + topic.decode().split("/")[2], payload, qos=1)
            conn.puback(pid)

        loop = asyncio.get_running_loop()

        def received(topic: bytes, payload: bytes, pid: int, dup: bool) -> None:
            loop.create_task(forward(topic, payload, pid))

        conn = await MqttConnection.open(host, port, ConnectOptions("fwd-ours", session_expiry_s=300,
                                                                    receive_maximum=1024), received)
        await conn.subscribe([SOURCE])
        ready.set()
        await asyncio.sleep(stop_after)
        await conn.disconnect()

    asyncio.run(main())


def paho(host: str, port: int, ready: Any, stop_after: float) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fwd-paho", clean_session=False,
                         manual_ack=True)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    waiting: dict[int, int] = {}

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        c.subscribe(SOURCE, qos=1)

    def on_subscribe(*args: Any) -> None:
        ready.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        info = c.publish("fwd/" + message.topic.split("/")[2], message.payload, qos=1)
        waiting[info.mid] = message.mid

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        incoming = waiting.pop(mid, None)
        if incoming is not None:
            c.ack(incoming, 1)

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message, client.on_publish = on_message, on_publish
    client.connect(host, port, keepalive=60)
    client.loop_start()
    time.sleep(stop_after)
    client.disconnect()
    client.loop_stop()


def gmqtt(host: str, port: int, ready: Any, stop_after: float) -> None:
    import gmqtt as g

    async def main() -> None:
        client = g.Client("fwd-gmqtt", clean_session=False, receive_maximum=1024)

        def on_message(c: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
            # QoS 0 out: gmqtt acks the incoming message on receipt anyway, and at QoS 1 its unacked
            # outgoing messages pile up past 65535 packet ids on a long run
            c.publish("fwd/" + topic.split("/")[2], payload, qos=0)
            return 0

        client.on_message = on_message
        await client.connect(host, port, version=g.constants.MQTTv50)
        client.subscribe(SOURCE, qos=1)
        await asyncio.sleep(0.3)
        ready.set()
        await asyncio.sleep(stop_after)
        await client.disconnect()

    asyncio.run(main())


FORWARDERS = {"ours (lean MQTT 5)": ours, "paho-mqtt (manual ack)": paho, "gmqtt (acks on receipt, QoS 0 out)": gmqtt}
