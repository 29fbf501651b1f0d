"""Device state, offline alarms through the spool to the sink, and commands over MQTT with their status."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from gateway.devices import CidStore, CommandBook, CommandRefused, Status, TooManyCommands
from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection
from gateway.service import Gateway
from kerbline.wire import command, cose
from tests.gateway.rig import DEVICES, jsonl_readings, key_of, make_config, sealed_report, wait_for, write_registry
from tests.harness.mosquitto import Mosquitto

import pytest


def test_cids_increase_across_restarts_with_block_reservation(tmp_path: Path) -> None:
    path = tmp_path / "cids.json"
    store = CidStore(path, block=10)
    first = [store.next("bin-0042") for _ in range(25)]
    assert first == list(range(1, 26)) and store.writes == 3  # one write per block, not per cid
    again = CidStore(path, block=10)  # after a crash: never below what was handed out
    assert again.next("bin-0042") > first[-1]
    assert again.next("lamp-0117") == 1


def test_command_book_validates_bounds_and_expires() -> None:
    book = CommandBook(ttl_s=60, max_per_device=2)
    with pytest.raises(CommandRefused):
        book.submit("bin-0042", "self-destruct", {})
    with pytest.raises(CommandRefused):
        book.submit("bin-0042", "reboot", {"now": True})
    with pytest.raises(CommandRefused):
        book.submit("bin-0042", "config", {"interval": {"nested": 1}})
    a = book.submit("bin-0042", "config", {"interval": 600})
    book.submit("bin-0042", "ping", None)
    with pytest.raises(TooManyCommands):
        book.submit("bin-0042", "ping", None)
    expired = book.expire(a.created + 61)
    assert len(expired) == 2 and a.status is Status.EXPIRED
    book.submit("bin-0042", "ping", None)  # a finished one makes room


async def test_silent_device_raises_offline_upstream_and_reporting_clears_it(tmp_path: Path,
                                                                             mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml", ["bin-0043"],
                   {"bin-0042": {"kind": "bin", "key": DEVICES["bin-0042"]["key"], "interval_s": 0.3}})
    config = make_config(tmp_path, mqtt_port=mosquitto.port,
                         extra="[devices]\noffline_after = 2\ncheck_every_s = 0.05\n")
    gateway = Gateway(config)
    await gateway.start()
    await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
    pub = await MqttConnection.open(mosquitto.host, mosquitto.port, ConnectOptions("bin-0042", clean_start=True),
                                    lambda *a: None)
    try:
        await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, 1, [("fill", 80), ("alarm", "full")]))
        await wait_for(lambda: gateway.devices.public("bin-0042")["reports"] == 1, 10, "the report")
        assert gateway.devices.public("bin-0042")["alarms"] == ["full"]
        sink = tmp_path / "out/readings.jsonl"
        await wait_for(lambda: any(r["value"] == "offline" for r in jsonl_readings(sink)), 10, "offline upstream")
        alarm = next(r for r in jsonl_readings(sink) if r["value"] == "offline")
        assert alarm["device"] == "bin-0042" and alarm["name"] == "alarm" and alarm["boot"] == 0
        state = gateway.devices.public("bin-0042")
        assert "offline" in state["alarms"]
        assert gateway.devices.public("bin-0043")["last_seen"] is None  # never seen: not watched
        await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, 2))
        await wait_for(lambda: "offline" not in gateway.devices.public("bin-0042")["alarms"], 10, "cleared")
        assert gateway.devices.public("bin-0042")["values"]["fill"]["unit"] == "/100"
    finally:
        await pub.disconnect()
        await gateway.stop()
    assert sum(r["value"] == "offline" for r in jsonl_readings(tmp_path / "out/readings.jsonl")) == 1


async def test_commands_reach_the_device_sealed_and_their_effect_marks_them(tmp_path: Path,
                                                                            mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml")
    gateway = Gateway(make_config(tmp_path, mqtt_port=mosquitto.port))
    await gateway.start()
    await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    def on_message(topic: bytes, payload: bytes, pid: int, dup: bool) -> None:
        received.put_nowait(payload)
        if pid:
            device.puback(pid)

    device = await MqttConnection.open(mosquitto.host, mosquitto.port,
                                       ConnectOptions("lamp-0117", clean_start=True), on_message)
    await device.subscribe(["kerbline/v1/lamp-0117/down"])
    sealer = cose.Sealer("lamp-0117", key_of("lamp-0117"))
    base = f"http://127.0.0.1:{gateway.http.port}"
    auth = {"Authorization": "Bearer test-token"}
    try:
        async with aiohttp.ClientSession() as http:
            async def post(body: object, headers: dict[str, str] = auth) -> tuple[int, dict]:
                async with http.post(f"{base}/devices/lamp-0117/commands", json=body, headers=headers) as r:
                    return r.status, await r.json()

            async def status(command_id: int) -> str:
                async with http.get(f"{base}/devices/lamp-0117/commands/{command_id}", headers=auth) as r:
                    return (await r.json())["status"]

            assert (await post({"op": "ping"}, {}))[0] == 401
            assert (await post({"op": "ping"}, {"Authorization": "Bearer wrong"}))[0] == 401
            assert (await post({"op": "fly"}))[0] == 400
            code, queued = await post({"op": "config", "args": {"report_s": 60}})
            assert code == 202 and queued["status"] == "queued"  # the lamp has not shown up yet
            await device.publish("kerbline/v1/lamp-0117/state", b"online", retain=True)
            cid, op, args = command.parse(sealer.open(await asyncio.wait_for(received.get(), 10)))
            assert (op, args) == ("config", {"report_s": 60})
            await wait_for(lambda: gateway.commands.get("lamp-0117", queued["id"]).status is Status.SENT, 5, "sent")
            code, ping = await post({"op": "ping"})  # online now: sent at once
            cid2, op2, _ = command.parse(sealer.open(await asyncio.wait_for(received.get(), 10)))
            assert op2 == "ping" and cid2 > cid
            code, reboot = await post({"op": "reboot"})
            await asyncio.wait_for(received.get(), 10)
            await asyncio.sleep(0.05)
            await device.publish("kerbline/v1/lamp-0117/up", sealed_report("lamp-0117", 1, 1, [("lux", 300)]))
            await wait_for(lambda: gateway.commands.get("lamp-0117", ping["id"]).status is Status.EFFECTED, 5, "ping")
            assert await status(queued["id"]) == "effected"
            assert await status(reboot["id"]) == "sent"  # same boot: the reboot has not shown yet
            # the same boot again: the reboot goes out again with its cid (a repeat is harmless)
            resent = command.parse(sealer.open(await asyncio.wait_for(received.get(), 10)))
            assert resent[1] == "reboot"
            await device.publish("kerbline/v1/lamp-0117/up", sealed_report("lamp-0117", 2, 1, [("lux", 300)]))
            await wait_for(lambda: gateway.commands.get("lamp-0117", reboot["id"]).status is Status.EFFECTED, 5,
                           "reboot seen as a new boot")
    finally:
        await device.disconnect()
        await gateway.stop()
