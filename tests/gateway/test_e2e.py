"""End to end with real parts: a serial device (the firmware's link on a pty) and MQTT devices (a real
mosquitto) report through one gateway to every kind of sink at once: a JSON Lines file, an HTTP
platform (aiohttp), an upstream MQTT broker (a second mosquitto) and an NGSI-LD broker (aiohttp)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection
from gateway.service import Gateway
from tests.gateway.rig import Pty, SerialDevice, jsonl_readings, make_config, report_keys, sealed_report, wait_for, \
    write_registry
from tests.harness.mosquitto import Mosquitto
from tests.harness.platform import Platform


async def test_serial_and_mqtt_reports_reach_every_sink(tmp_path: Path, mosquitto_factory: object) -> None:
    devices_broker: Mosquitto = mosquitto_factory()  # type: ignore[operator]
    city_broker: Mosquitto = mosquitto_factory()  # type: ignore[operator]
    write_registry(tmp_path / "registry.toml")
    pty = Pty()
    upstream_batches: list[dict] = []

    def on_city(topic: bytes, payload: bytes, pid: int, dup: bool) -> None:
        upstream_batches.append(json.loads(payload))
        if pid:
            city.puback(pid)

    city = await MqttConnection.open(city_broker.host, city_broker.port, ConnectOptions("city", clean_start=True),
                                     on_city)
    await city.subscribe(["city/readings"])
    async with Platform(token="platform-token") as platform, Platform() as orion:
        sinks = f"""
[[sinks]]
type = "jsonl"
name = "file"
path = "{tmp_path}/out/readings.jsonl"
batch.window_s = 0.05
[[sinks]]
type = "http"
name = "platform"
url = "{platform.url}/readings"
token = "platform-token"
batch.window_s = 0.05
[[sinks]]
type = "mqtt"
name = "city"
host = "{city_broker.host}"
port = {city_broker.port}
topic = "city/readings"
batch.window_s = 0.05
[[sinks]]
type = "ngsild"
name = "orion"
url = "{orion.url}"
batch.window_s = 0.05
"""
        gateway = Gateway(make_config(tmp_path, mqtt_port=devices_broker.port, serial=[pty.path], sinks=sinks))
        serial_device = SerialDevice("bin-0042", pty, tmp_path / "bin-0042")
        expected = [("bin-0042", *serial_device.report()) for _ in range(5)]
        await gateway.start()
        serial_device.start()
        pub = await MqttConnection.open(devices_broker.host, devices_broker.port,
                                        ConnectOptions("lamp-0117", clean_start=True), lambda *a: None)
        try:
            await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
            for seq in range(1, 6):
                await pub.publish("kerbline/v1/lamp-0117/up",
                                  sealed_report("lamp-0117", 4, seq, [("lux", 120 + seq), ("lamp", True)]))
                expected.append(("lamp-0117", 4, seq))
            file = tmp_path / "out/readings.jsonl"
            await wait_for(lambda: len(report_keys(jsonl_readings(file))) == 10, 20, "ten reports in the file")
            await wait_for(lambda: len(serial_device.queue) == 0, 20, "the serial device acked empty")

            def http_keys() -> set[tuple[str, int, int]]:
                return {(r["device"], r["boot"], r["seq"]) for req in platform.accepted()
                        for r in req.json()["readings"]}

            def mqtt_keys() -> set[tuple[str, int, int]]:
                return {(r["device"], r["boot"], r["seq"]) for b in upstream_batches for r in b["readings"]}

            await wait_for(lambda: http_keys() == set(expected), 20, "every report at the HTTP platform")
            await wait_for(lambda: mqtt_keys() == set(expected), 20, "every report on the city broker")
            await wait_for(lambda: {e["id"] for req in orion.accepted() for e in req.json()} ==
                           {"urn:ngsi-ld:WasteContainer:bin-0042", "urn:ngsi-ld:Streetlight:lamp-0117"}, 20,
                           "both entities upserted")
            assert sorted(set(report_keys(jsonl_readings(file)))) == sorted(expected)
            assert all(req.key for req in platform.accepted())  # every batch carries its idempotency key
            assert all("/ngsi-ld/v1/entityOperations/upsert" in req.path for req in orion.accepted())
        finally:
            await serial_device.stop()
            await pub.disconnect()
            await gateway.stop()
            await city.disconnect()
            pty.close()
