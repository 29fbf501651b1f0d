"""The local HTTP API: health follows the links, metrics carry the rejection reasons, the token guards
commands and the quarantine (and an unset token turns them off)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection
from gateway.service import Gateway
from tests.gateway.rig import make_config, sealed_report, wait_for, write_registry
from tests.harness.mosquitto import Mosquitto


async def test_health_metrics_devices_links_and_token(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml")
    gateway = Gateway(make_config(tmp_path, mqtt_port=mosquitto.port))
    await gateway.start()
    await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
    base = f"http://127.0.0.1:{gateway.http.port}"
    pub = await MqttConnection.open(mosquitto.host, mosquitto.port, ConnectOptions("p", clean_start=True),
                                    lambda *a: None)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json()) == {"status": "ok"}
            await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, 1))
            await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0043", 1, 1))
            await wait_for(lambda: gateway.metrics.received["mqtt"] == 2, 10, "two messages")
            # the device's report count moves at the commit, after the message was counted as received
            await wait_for(lambda: gateway.metrics.stored["mqtt"] == 1, 10, "one report committed")
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'kerbline_rejected_total{link="mqtt",reason="kid_mismatch"} 1.0' in text
            assert 'kerbline_reports_received_total{link="mqtt"} 2.0' in text
            assert "kerbline_spool_stored_reports_total" in text and "kerbline_upstream_lag" in text
            async with http.get(f"{base}/devices") as r:
                devices = {d["id"]: d for d in (await r.json())["devices"]}
            assert set(devices) == {"bin-0042", "bin-0043", "lamp-0117"}
            assert devices["bin-0042"]["reports"] == 1 and "key" not in devices["bin-0042"]
            async with http.get(f"{base}/devices/nope") as r:
                assert r.status == 404
            async with http.get(f"{base}/links") as r:
                assert (await r.json())["mqtt"]["connected"] is True
            async with http.get(f"{base}/quarantine") as r:
                assert r.status == 401
            async with http.get(f"{base}/quarantine", headers={"Authorization": "Bearer test-token"}) as r:
                frames = (await r.json())["frames"]
            assert [f["reason"] for f in frames] == ["kid_mismatch"]
            mosquitto.stop()
            await wait_for(lambda: not gateway.mqtt.connected, 10, "the broker gone")
            async with http.get(f"{base}/healthz") as r:
                body = await r.json()
                assert r.status == 503 and body["status"] == "degraded"
                assert any("MQTT broker not connected" in reason for reason in body["reasons"])
            mosquitto.start()
            await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
    finally:
        pub.abort()
        await gateway.stop()


async def test_without_a_token_commands_and_quarantine_are_off(tmp_path: Path) -> None:
    write_registry(tmp_path / "registry.toml")
    config = make_config(tmp_path, token="")
    gateway = Gateway(config)
    await gateway.start()
    base = f"http://127.0.0.1:{gateway.http.port}"
    try:
        async with aiohttp.ClientSession() as http:
            for method, path in (("POST", "/devices/bin-0042/commands"), ("GET", "/quarantine")):
                async with http.request(method, base + path, json={"op": "ping"},
                                        headers={"Authorization": "Bearer "}) as r:
                    assert r.status == 403
    finally:
        await gateway.stop()
