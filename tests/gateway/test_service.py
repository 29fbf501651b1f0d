"""The service: SIGTERM drains in order and exits 0 with nothing lost; the liveness hook names a stuck stage."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection
from gateway.service import Gateway
from tests.gateway.rig import (GatewayProcess, config_text, jsonl_readings, make_config, report_keys, scrape,
                               sealed_report, wait_for, write_registry)
from tests.harness.mosquitto import Mosquitto, free_port
from tests.harness.platform import Answer, Platform


def test_sigterm_drains_everything_and_exits_zero(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml")
    path = tmp_path / "gateway.toml"
    # a long batch window: on SIGTERM the batch must be closed and delivered at once, not lost or left
    sinks = f'[[sinks]]\ntype = "jsonl"\nname = "file"\npath = "{tmp_path}/out/readings.jsonl"\nbatch.window_s = 600\n'
    http_port = free_port()
    path.write_text(config_text(tmp_path, mqtt_port=mosquitto.port, sinks=sinks, http_port=http_port))
    with GatewayProcess(path, tmp_path / "gateway.log") as gw:
        gw.wait_log("broker connected")

        async def publish() -> None:
            pub = await MqttConnection.open(mosquitto.host, mosquitto.port, ConnectOptions("p", clean_start=True),
                                            lambda *a: None)
            for seq in range(1, 51):
                await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, seq))
            await pub.disconnect()

        asyncio.run(publish())
        deadline = time.monotonic() + 10
        while scrape(http_port, "kerbline_reports_stored_total") < 50:
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.05)
        assert jsonl_readings(tmp_path / "out/readings.jsonl") == []  # all in the spool, the batch still open
        assert gw.terminate() == 0
        log = gw.log()
    assert report_keys(jsonl_readings(tmp_path / "out/readings.jsonl")) == [("bin-0042", 1, s) for s in range(1, 51)]
    stopping, stopped = log.index("gateway stopping"), log.index("gateway stopped")
    assert stopping < stopped and "upstream_drained=True" in log[stopped:]


async def test_a_sink_waiting_out_a_long_batch_window_is_not_stalled(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A window longer than the watchdog interval must not get a healthy gateway restarted by systemd."""
    write_registry(tmp_path / "registry.toml")
    async with Platform() as platform:
        sinks = f'[[sinks]]\ntype = "http"\nname = "platform"\nurl = "{platform.url}"\nbatch.window_s = 60.0\n'
        gateway = Gateway(make_config(tmp_path, mqtt_port=mosquitto.port, sinks=sinks))
        await gateway.start()
        try:
            await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
            pub = await MqttConnection.open(mosquitto.host, mosquitto.port, ConnectOptions("p", clean_start=True),
                                            lambda *a: None)
            await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, 1))
            await pub.disconnect()
            await wait_for(lambda: gateway.spool.last_id >= 1, 5, "the report to be stored")
            await asyncio.sleep(2.5)  # the batch is open, its window far from over
            assert gateway.liveness()["sink:platform"] == 0.0
            assert gateway.stalled(2.0) == []
        finally:
            await gateway.stop()


async def test_liveness_names_a_sink_that_stops_making_progress(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_registry(tmp_path / "registry.toml")
    async with Platform(default=Answer(204, delay_s=6)) as platform:  # accepts, then never answers
        sinks = (f'[[sinks]]\ntype = "http"\nname = "platform"\nurl = "{platform.url}"\ntimeout_s = 60.0\n'
                 "batch.window_s = 0.01\n")
        config = make_config(tmp_path, mqtt_port=mosquitto.port, sinks=sinks)
        gateway = Gateway(replace(config, shutdown=replace(config.shutdown, drain_s=0.2)))
        await gateway.start()
        try:
            await asyncio.wait_for(gateway.mqtt.subscribed.wait(), 10)
            assert gateway.stalled(2.0) == []
            assert set(gateway.liveness()) == {"loop", "devices", "mqtt", "sink:platform"}
            pub = await MqttConnection.open(mosquitto.host, mosquitto.port, ConnectOptions("p", clean_start=True),
                                            lambda *a: None)
            await pub.publish("kerbline/v1/bin-0042/up", sealed_report("bin-0042", 1, 1))
            await pub.disconnect()
            await platform.wait_for(1)
            await wait_for(lambda: gateway.stalled(2.0) == ["sink:platform"], 5, "the stuck sink to show")
            assert gateway.liveness()["loop"] < 2.0  # the loop itself keeps ticking
        finally:
            await gateway.stop()
