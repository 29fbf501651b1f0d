"""The sensor server: its line protocol over a real TCP socket, its refusals, and its hardware models.

The firmware side of the protocol (the sim board) is exercised end to end by test_device_sim.py; here the
server is driven line by line, so each answer and each refusal is checked exactly, and the answers are
checked against the firmware's own conversions (run under CPython): what the server serves is what the
firmware reads back.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kerbline.sensors import scaled
from kerbline.sensors.light import bh1750_lux, ldr_lux
from kerbline.sensors.ultrasonic import echo_to_mm
from simulator.devices.sensor_server import DEFAULT_LDR_TABLE, MAX_LINE, BenchHardware, SensorServer, WorldHardware
from simulator.scenario import builtin_scenario
from simulator.world import World

BIN = {"id": "bin-0042", "kind": "bin", "pins": {"trig": 5, "echo": 18, "temp": 4, "batt": 34, "tilt": 27,
                                                 "lid": 26, "skip": 0}}
LIGHT = {"id": "lamp-0117", "kind": "light", "pins": {"scl": 22, "sda": 21, "ldr": 35, "relay": 25, "pwm": 26,
                                                      "volt": 32, "curr": 33}}


class Line:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, line: str) -> str:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        return (await asyncio.wait_for(self.reader.readline(), 5)).decode().strip()


@pytest.fixture
async def server() -> AsyncIterator[SensorServer]:
    srv = SensorServer()
    await srv.start()
    yield srv
    await srv.close()


async def connect(server: SensorServer, device: str | None = None) -> Line:
    line = Line(*await asyncio.open_connection("127.0.0.1", server.port))
    if device is not None:
        assert await line.ask(f"hello {device}") == "ok"
    return line


async def test_bin_hardware_over_the_socket(server: SensorServer) -> None:
    hw = BenchHardware(dist_mm=762.0, temp=13.25, jitter_mm=0.0)
    server.add_device(BIN, hw)
    line = await connect(server, "bin-0042")
    echo = int(await line.ask("echo 5 18 30000"))
    assert abs(echo_to_mm(echo, 212) - 762) <= 1  # the firmware's conversion at 13.25 degC gets it back
    assert await line.ask("temp 4") == "212"
    assert scaled(int(await line.ask("adc 34")), 2000) == 3800
    assert await line.ask("pin 27") == "0" and await line.ask("pin 0") == "1"  # skip not held: high
    hw.switches.update(tilt=True, skip=True)
    assert await line.ask("pin 27") == "1" and await line.ask("pin 0") == "0"
    hw.no_echo = True
    assert await line.ask("echo 5 18 30000") == "none"
    hw.no_echo = False
    hw.dist_mm = 6000.0
    assert await line.ask("echo 5 18 30000") == "none"  # the echo would come after the timeout
    assert await line.ask("temp 9") == "none"  # no DS18B20 on that pin
    assert await line.ask("i2cw 35 01") == "nack"  # a bin has no I2C devices
    assert hw.boots == 1 and not server.rejected


async def test_bh1750_register_model_and_light_outputs(server: SensorServer) -> None:
    hw = BenchHardware(lux_value=1000.0)
    hw.values["curr"] = 199.0
    server.add_device(LIGHT, hw)
    line = await connect(server, "lamp-0117")
    for op in ("01", "42", "65", "20"):  # power on, MTreg 69, one-time high resolution
        assert await line.ask(f"i2cw 35 {op}") == "ok"
    assert bh1750_lux(int(await line.ask("i2cr 35 2"), 16), 69) == 1000
    for op in ("40", "7f", "20"):  # MTreg 31
        await line.ask(f"i2cw 35 {op}")
    assert bh1750_lux(int(await line.ask("i2cr 35 2"), 16), 31) == 1000
    hw.bus_error = True
    assert await line.ask("i2cw 35 20") == "nack"
    ldr_mv = int(await line.ask("adc 35"))  # the LDR is analog: no bus to fail; the table read backwards
    assert abs(ldr_lux(ldr_mv, DEFAULT_LDR_TABLE) - 1000) <= 5
    assert scaled(int(await line.ask("adc 32")), 200) == 230
    assert scaled(int(await line.ask("adc 33")), 5405) == 199
    assert await line.ask("relay 25 1") == "ok" and await line.ask("pwm 26 818") == "ok"
    assert hw.outputs == {"relay": 1, "pwm": 818}


async def test_deep_sleep_is_answered_at_the_wake(server: SensorServer) -> None:
    hw = BenchHardware(time_scale=0.001)
    server.add_device(BIN, hw)
    line = await connect(server, "bin-0042")
    assert await line.ask("sleep 900000 27 26") == "timer"
    hw.time_scale = 1.0
    asking = asyncio.ensure_future(line.ask("sleep 900000 27 26"))
    await asyncio.sleep(0.2)
    assert not asking.done()
    hw.switches["lid"] = True
    hw.wake_event.set()
    assert await asking == "pin 26"
    assert hw.sleeps == [(900000, ["tilt", "lid"])] * 2


async def test_refusals_are_counted(server: SensorServer) -> None:
    server.add_device(BIN, BenchHardware())
    stranger = await connect(server)
    assert await stranger.ask("hello bin-9999") == "err unknown_device"
    line = await connect(server, "bin-0042")
    assert await line.ask("adc") == "err bad_request"
    assert await line.ask("adc x") == "err bad_request"
    assert await line.ask("frobnicate 1") == "err bad_request"
    assert await line.ask("adc 99") == "err bad_request"  # no role on that pin
    assert dict(server.rejected) == {"unknown_device": 1, "bad_request": 4}
    line.writer.write(b"x" * (MAX_LINE * 2) + b"\n")
    assert await asyncio.wait_for(line.reader.read(), 5) == b""  # closed
    assert server.rejected["too_long"] == 1


async def test_world_hardware_serves_the_world(server: SensorServer) -> None:
    scenario = builtin_scenario("demo")
    world = World(scenario)
    now = scenario.start + 3600
    bin_hw = WorldHardware(world, "bin-0001", lambda: now, asyncio.sleep)
    lamp_hw = WorldHardware(world, "lamp-0001", lambda: now, asyncio.sleep)
    bin_cfg: dict[str, Any] = {**BIN, "id": "bin-0001"}
    server.add_device(bin_cfg, bin_hw)
    server.add_device({**LIGHT, "id": "lamp-0001"}, lamp_hw)
    line = await connect(server, "bin-0001")
    truth = world.bin("bin-0001")
    sample = bin_hw._bin()  # the wake's sample, taken at hello
    t16 = int(await line.ask("temp 4"))
    assert abs(t16 / 16 - sample.temp_c) < 1.0  # the world's sensor noise on top
    dists = [echo_to_mm(int(reply), t16) for reply in [await line.ask("echo 5 18 30000") for _ in range(5)]
             if reply != "none"]
    assert dists and all(abs(d - sample.dist_mm) < 15 for d in dists)
    assert abs(scaled(int(await line.ask("adc 34")), 2000) - sample.batt_mv) < 50
    assert truth is world.bin("bin-0001")
    lamp = await connect(server, "lamp-0117".replace("0117", "0001"))
    assert await lamp.ask("relay 25 1") == "ok"
    assert world.light("lamp-0001").sample(now).on


def test_the_ldr_table_is_the_firmwares_default() -> None:
    """The server reads the firmware's default LDR curve backwards: the two copies must agree."""
    from kerbline import config

    cfg = config.check({"id": "lamp-0117", "kind": "light", "key": "00" * 32, "link": {"type": "serial"}})
    assert cfg["ldr_table"] == DEFAULT_LDR_TABLE
