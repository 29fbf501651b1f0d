"""MQTT upstream sink against a real second mosquitto: QoS 1 batches, and a broker outage survived."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from gateway.upstream import BatchConfig, SinkSpec
from gateway.upstream.mqtt import MqttSink, MqttSinkConfig
from tests.harness.mosquitto import Mosquitto
from tests.harness.reports import bin_report
from tests.harness.upstream import FAST_RETRY, delivered_all, eventually, open_spool, running

RAW = b"cose message"
TOPIC = "city/district-7/kerbline"


def mqtt_spec(broker: Mosquitto) -> SinkSpec:
    sink = MqttSink(MqttSinkConfig("city-mqtt", broker.host, TOPIC, port=broker.port, client_id="gw-upstream",
                                   timeout_s=2))
    return SinkSpec(sink, BatchConfig(max_records=8, window_s=0.05), FAST_RETRY)


async def collect(client: aiomqtt.Client, into: list[aiomqtt.Message]) -> None:
    async for message in client.messages:
        into.append(message)


def subscriber(broker: Mosquitto) -> aiomqtt.Client:
    # A persistent session: what is published while this client is away is queued for it (QoS 1).
    return aiomqtt.Client(broker.host, broker.port, identifier="platform-reader", clean_session=False)


async def read_batches(broker: Mosquitto, count: int, got: list[aiomqtt.Message]) -> None:
    """Resume the persistent session and take what the broker queued for it."""
    async with subscriber(broker) as client:
        task = asyncio.create_task(collect(client, got))
        try:
            await eventually(lambda: len(got) >= count, what=f"{count} batches on {TOPIC}")
        finally:
            task.cancel()


async def test_batches_are_published_qos1_to_the_upstream_broker(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory()
    got: list[aiomqtt.Message] = []
    async with subscriber(broker) as client:
        await client.subscribe(TOPIC, qos=1)
        reader = asyncio.create_task(collect(client, got))
        async with open_spool(tmp_path) as spool:
            for seq in range(1, 7):
                await spool.submit(bin_report("bin-0042", 1, seq), RAW)
            async with running(spool, [mqtt_spec(broker)]):
                await delivered_all(spool)
            await eventually(lambda: len(got) == 3)
        reader.cancel()
    bodies = [json.loads(m.payload) for m in got]  # type: ignore[arg-type]
    assert all(m.qos == 1 and m.topic.value == TOPIC for m in got)
    assert len({b["batch"] for b in bodies}) == 3
    assert [[r["seq"] for r in b["readings"]] for b in bodies] == [[1] * 4 + [2] * 4, [3] * 4 + [4] * 4,
                                                                  [5] * 4 + [6] * 4]


async def test_a_broker_outage_is_retried_until_it_is_back(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory(persistence=True)
    async with subscriber(broker) as client:
        await client.subscribe(TOPIC, qos=1)  # the session and its subscription outlive the restart
    async with open_spool(tmp_path) as spool:
        async with running(spool, [mqtt_spec(broker)]) as upstream:
            await spool.submit(bin_report("bin-0042", 1, 1), RAW)
            await delivered_all(spool)
            broker.stop()
            for seq in range(2, 5):
                await spool.submit(bin_report("bin-0042", 1, seq), RAW)
            await eventually(lambda: upstream.runners[0].stats.retries >= 3, what="retries while the broker is down")
            assert spool.stats().reports == 3
            await asyncio.to_thread(broker.start)
            await delivered_all(spool)
    got: list[aiomqtt.Message] = []
    await read_batches(broker, 3, got)
    seqs = [r["seq"] for m in got for r in json.loads(m.payload)["readings"]]  # type: ignore[arg-type]
    assert seqs == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4  # in order, none lost, none twice
