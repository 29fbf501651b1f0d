"""MQTT ingest against a real mosquitto: reports reach the sink; bad ones are refused with their reason;
PUBACK only after the commit (the gateway killed in between loses nothing); a $share group splits a fleet."""
from __future__ import annotations

import asyncio

import time
from dataclasses import replace
from pathlib import Path

from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection
from gateway.service import Gateway
from tests.gateway.rig import (GatewayProcess, config_text, fleet_key, jsonl_readings, make_config, report_keys,
                               scrape, sealed_report, wait_for, write_registry)
from tests.harness.mosquitto import Mosquitto, free_port


async def _publisher(broker: Mosquitto, client_id: str = "test-publisher") -> MqttConnection:
    return await MqttConnection.open(broker.host, broker.port, ConnectOptions(client_id, clean_start=True),
                                     lambda *a: None)


def _rejected(gateway: Gateway, reason: str) -> float:
    return gateway.metrics.rejected.labels(reason, "mqtt")._value.get()


async def test_reports_stored_and_bad_ones_refused_with_their_reason(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml")
    gateway = Gateway(make_config(tmp_path, mqtt_port=mosquitto.port))
    await gateway.start()
    assert gateway.mqtt is not None
    await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
    pub = await _publisher(mosquitto)
    try:
        good = [sealed_report("bin-0042", 3, seq) for seq in range(1, 4)]
        for message in good:
            await pub.publish("kerbline/v1/bin-0042/up", message)
        forged = bytearray(sealed_report("bin-0042", 3, 4))
        forged[-1] ^= 1
        await pub.publish("kerbline/v1/bin-0042/up", bytes(forged))  # forged: bad MAC
        await pub.publish("kerbline/v1/bin-0042/up", good[0])  # replayed
        await pub.publish("kerbline/v1/lamp-0117/up", sealed_report("bin-0042", 3, 5))  # another's topic
        await pub.publish("kerbline/v1/bin-0042/up", b"\xd1" + b"\x00" * 1500)  # oversized
        await pub.publish("kerbline/v1/bin-9999/up", sealed_report("bin-0043", 1, 1))  # wrong topic for the kid
        await wait_for(lambda: gateway.metrics.received["mqtt"] == 8, 10, "all 8 messages")
        await wait_for(lambda: _rejected(gateway, "duplicate") == 1, 10, "the replay counted")
        assert gateway.metrics.stored["mqtt"] == 3
        for reason, count in (("bad_tag", 1), ("kid_mismatch", 2), ("too_large", 1), ("duplicate", 1)):
            assert _rejected(gateway, reason) == count, reason
        held = gateway.quarantine.list()
        assert sorted(f["reason"] for f in held) == ["bad_tag", "kid_mismatch", "kid_mismatch", "too_large"]
        assert bytes.fromhex(next(f for f in held if f["reason"] == "bad_tag")["raw_hex"]) == bytes(forged)
        await wait_for(lambda: len(jsonl_readings(tmp_path / "out/readings.jsonl")) == 6, 10, "readings in the sink")
        assert report_keys(jsonl_readings(tmp_path / "out/readings.jsonl")) == [("bin-0042", 3, s) for s in (1, 2, 3)]
    finally:
        await pub.disconnect()
        await gateway.stop()


async def test_device_state_topic_is_read(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml")
    gateway = Gateway(make_config(tmp_path, mqtt_port=mosquitto.port))
    await gateway.start()
    pub = await _publisher(mosquitto)
    try:
        await pub.publish("kerbline/v1/lamp-0117/state", b"online", retain=True)
        await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
        await wait_for(lambda: (gateway.devices.public("lamp-0117") or {}).get("mqtt_state") == "online", 10,
                       "the retained state")
        await pub.publish("kerbline/v1/lamp-0117/state", b"offline", retain=True)
        await wait_for(lambda: gateway.devices.public("lamp-0117")["mqtt_state"] == "offline", 10, "offline")
    finally:
        await pub.disconnect()
        await gateway.stop()


def test_killed_between_receipt_and_commit_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The commit is held 30 s (debug hook); the gateway process is SIGKILLed inside that window. The
    broker never got a PUBACK, so it sends the reports again to the restarted gateway: all are stored, once."""
    write_registry(tmp_path / "registry.toml")
    http_port = free_port()
    slow = tmp_path / "slow.toml"
    slow.write_text(config_text(tmp_path, mqtt_port=mosquitto.port, http_port=http_port,
                                extra="[debug]\ncommit_delay_s = 30.0\n"))
    with GatewayProcess(slow, tmp_path / "gateway.log") as gw:
        gw.wait_log("broker connected")

        async def publish() -> None:
            pub = await _publisher(mosquitto)
            for seq in range(1, 6):
                await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, seq))
            await pub.disconnect()

        asyncio.run(publish())
        deadline = time.monotonic() + 10
        while scrape(http_port, "kerbline_reports_received_total") < 5:
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.05)
        assert scrape(http_port, "kerbline_reports_stored_total") == 0
        gw.kill()  # SIGKILL: received, verified, not committed, not acknowledged
    assert jsonl_readings(tmp_path / "out/readings.jsonl") == []
    fast = tmp_path / "fast.toml"
    fast.write_text(config_text(tmp_path, mqtt_port=mosquitto.port, http_port=http_port))
    with GatewayProcess(fast, tmp_path / "gateway2.log") as gw:
        gw.wait_log("broker connected")
        deadline = time.monotonic() + 15
        while len(report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))) < 5:
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.05)
        assert gw.terminate() == 0
    assert report_keys(jsonl_readings(tmp_path / "out/readings.jsonl")) == [("bin-0042", 1, s) for s in range(1, 6)]


async def test_two_gateways_on_one_share_group_split_the_fleet(tmp_path: Path, mosquitto: Mosquitto) -> None:
    devices = [f"bin-{i:04d}" for i in range(100, 120)]
    gateways = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        write_registry(folder / "registry.toml", [], {d: {"kind": "bin", "key": fleet_key(d)} for d in devices})
        config = make_config(folder, mqtt_port=mosquitto.port)
        config = replace(config, mqtt=replace(config.mqtt, share_group="district-7", client_id=f"gw-{name}"))
        gateways.append((folder, Gateway(config)))
    for _, gateway in gateways:
        await gateway.start()
        await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
    pub = await _publisher(mosquitto)
    try:
        sent = [(d, 1, seq) for seq in range(1, 11) for d in devices]
        for device, boot, seq in sent:
            await pub.publish(f"kerbline/v1/{device}/up", sealed_report(device, boot, seq))
        total = lambda: sum(g.metrics.stored["mqtt"] for _, g in gateways)  # noqa: E731
        await wait_for(lambda: total() == len(sent), 20, "every report stored by one of the gateways")
    finally:
        await pub.disconnect()
        for _, gateway in gateways:
            await gateway.stop()
    per_gateway = [report_keys(jsonl_readings(folder / "out/readings.jsonl")) for folder, _ in gateways]
    assert all(len(keys) > 0 for keys in per_gateway), "both gateways took a share"
    together = per_gateway[0] + per_gateway[1]
    assert sorted(together) == sorted(sent)  # nothing lost, nothing doubled



async def test_reports_queued_on_the_broker_are_all_acked_after_a_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The broker sends a stored session's queued reports right after CONNACK, before the gateway's
    subscriptions are confirmed; each must still be PUBACKed on its connection, or it holds a slot of the
    broker's window for good: with a window of 10 and 60 queued, the backlog would stop at 10."""
    write_registry(tmp_path / "registry.toml")
    config = make_config(tmp_path, mqtt_port=mosquitto.port)
    first = Gateway(config)
    await first.start()
    assert first.mqtt is not None
    await asyncio.wait_for(first.mqtt.subscribed.wait(), 10)
    await first.stop()  # the session stays on the broker, which queues what comes meanwhile
    pub = await _publisher(mosquitto)
    for seq in range(1, 61):
        await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 2, seq))
    await pub.disconnect()
    second = Gateway(replace(config, mqtt=replace(config.mqtt, receive_maximum=10)))
    await second.start()
    try:
        await wait_for(lambda: second.metrics.stored["mqtt"] == 60, 15, "all 60 queued reports stored")
        await wait_for(lambda: len(report_keys(jsonl_readings(tmp_path / "out/readings.jsonl"))) == 60, 10,
                       "all 60 upstream")
    finally:
        await second.stop()
