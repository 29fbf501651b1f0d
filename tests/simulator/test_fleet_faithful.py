"""Faithful and fleet modes make the same frames for the same inputs.

A faithful bin (the firmware in a MicroPython process with the 64 KB budget and its package in ROM, over a
pty) and a fleet bin (the same firmware modules in CPython on the FleetBoard) are given the same hardware
script, wake by wake: distances, temperatures, a lid, a knock-over, a sonar that stops answering, a fire. Each
wake's clock reading is an input too: the faithful device's clock is the host's (set by a `time` command after
its first report), so the test reads the time each faithful frame carries and wakes the fleet device at that
instant. Every frame after the first (the first carries the faithful process's wall-clock uptime) must be byte
for byte the same: boot, seq, the records with their alarms, the time, and the MAC over all of it.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from gateway.wire import parse_report, verify
from kerbline import config
from simulator.devices import provision
from simulator.devices.sensor_server import BenchHardware, SensorServer
from simulator.fleet.device import FleetDevice, firmware_for_cpython
from tests.simulator.devices_rig import BenchDevice, demo

T0 = 1_782_000_000  # the time the test's gateway sets
# per wake: the sonar's distance (None: no echo), the DS18B20's temperature, tilt and lid switches
SCRIPT = [
    (700.0, 20.0, False, False),
    (650.0, 21.5, False, False),
    (640.0, 22.0, False, False),
    (180.0, 22.5, False, False),  # nearly full: the full alarm
    (175.0, 85.0, True, False),  # fire and knocked over
    (None, 30.0, False, False),  # no echo: sensor_fault, no fill value
    (900.0, 24.0, False, True),  # lid open: no sonar reading, full stands as it was
    (1000.0, 19.0, False, False),  # emptied
]


class ScriptedBench(BenchHardware):
    """Bench hardware whose values change at every wake (the sensor server's `hello`)."""

    def booted(self) -> None:
        dist, temp, tilt, lid = SCRIPT[min(self.boots, len(SCRIPT) - 1)]
        self.no_echo = dist is None
        self.dist_mm = dist or 0.0
        self.temp = temp
        self.switches = {"tilt": tilt, "lid": lid}
        super().booted()


def scripted() -> ScriptedBench:
    return ScriptedBench(time_scale=0.0, rng=random.Random(7))


async def faithful_frames(root: Path) -> tuple[list[bytes], dict[str, object], bytes]:
    dev = BenchDevice(root, hardware=scripted(), settings={"interval": 60, "wake_s": 2})
    await dev.start()
    try:
        await dev.gateway.wait_reports(1)
        dev.gateway.send("time", {"time": T0}, dev.device_id)  # as the gateway does when a port opens
        await dev.gateway.wait_reports(len(SCRIPT), timeout=120)
    finally:
        await dev.stop()
    first: dict[tuple[int, int], bytes] = {}
    for message in dev.gateway.frames:
        r = parse_report(verify(message, lambda d: dev.key)[1], dev.device_id)
        first.setdefault((r.boot, r.seq), message)
    return [first[k] for k in sorted(first)][:len(SCRIPT)], dev.config, dev.key


def fleet_frames(cfg_raw: dict[str, object], key: bytes, times: list[int | None]) -> list[bytes]:
    firmware_for_cpython()
    cfg = config.check(dict(cfg_raw))
    config.take_key(cfg)
    device = FleetDevice(cfg, key, SensorServer(), lambda d: scripted())
    device.power_on(T0 - 3600)
    out = []
    t = T0 - 3600.0
    for i, at in enumerate(times):
        if at is not None:
            device.board.clock_offset_s = 0  # the clock was set (by the `time` command): it reads simulated time
            t = float(at)
        device.wake(t)
        (boot, seq, _alarm, message), = device.queue.peek(1)
        device.acked(boot, seq)
        out.append(message)
        t += 60
    return out


async def test_faithful_and_fleet_bins_make_identical_frames(tmp_path: Path) -> None:
    faithful, cfg, key = await faithful_frames(tmp_path / "faithful")
    reports = [parse_report(verify(m, lambda d: key)[1], str(cfg["id"])) for m in faithful]
    times = [r.time for r in reports]
    assert times[0] is None and all(t is not None and t >= T0 for t in times[1:])
    fleet = await asyncio.to_thread(fleet_frames, cfg, key, times)
    assert fleet[1:] == faithful[1:]
    # the script did reach the firmware: the alarms it should raise are in the frames
    alarms = [{x.value for x in r.readings if x.name == "alarm"} for r in reports]
    assert alarms[3] == {"full"} and {"fire", "tilt"} <= alarms[4] and "sensor_fault" in alarms[5]
    assert not alarms[7]
    # the first frames differ only by what the clocks said (uptime): same records
    first_fleet = parse_report(verify(fleet[0], lambda d: key)[1], str(cfg["id"]))
    assert first_fleet.readings == reports[0].readings and (first_fleet.boot, first_fleet.seq) == (1, 1)


async def test_fleet_board_gets_the_replies_a_faithful_board_gets_over_tcp() -> None:
    """The same request lines, to the same kind of hardware, over the sensor server's TCP socket (what a
    faithful board sends) and through the fleet's in-process path: the same replies, errors included."""
    sc = demo()
    spec = next(d for d in sc.devices if d.kind == "light")
    raw = provision.device_config(sc, spec, provision.new_key(), provision.serial_link("/dev/null"))
    pins = raw["pins"]
    requests = [("adc %d", pins["volt"]), ("adc %d", pins["curr"]), ("adc %d", pins["ldr"]),
                ("i2cw %d %s", 0x23, "01"), ("i2cw %d %s", 0x23, "47"), ("i2cw %d %s", 0x23, "7e"),
                ("i2cw %d %s", 0x23, "20"), ("i2cr %d %d", 0x23, 2), ("i2cr %d %d", 0x24, 2),
                ("relay %d %d", pins["relay"], 1), ("pwm %d %d", pins["pwm"], 511), ("pin %d", 0),
                ("temp %d", 4), ("i2cw %d %s", 0x23, "zz"), ("adc %d", 99)]

    def hardware() -> BenchHardware:
        return BenchHardware(lux_value=37.0, values={"batt": 3800.0, "volt": 231.0, "curr": 270.0})

    server = SensorServer()
    await server.start()
    cfg_public = {k: v for k, v in raw.items() if k != "key"}
    server.add_device(cfg_public, hardware())
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"hello {spec.id}\n".encode())
    assert (await reader.readline()).strip() == b"ok"
    over_tcp = []
    for fmt, *args in requests:
        writer.write(((fmt % tuple(args)) + "\n").encode())
        over_tcp.append((await reader.readline()).strip())
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.05)  # the server's handler sees the end of the connection
    await server.close()

    firmware_for_cpython()
    cfg = config.check(dict(raw))
    device = FleetDevice(cfg, config.take_key(cfg), SensorServer(), lambda d: hardware())
    in_process = []
    for fmt, *args in requests:
        try:
            in_process.append(device.board.ask(fmt, *args))
        except OSError:
            in_process.append(b"err")
    assert [r if not r.startswith(b"err") else b"err" for r in over_tcp] == in_process
    assert over_tcp[7] == b"%04x" % int(37.0 * 1.2 * 254 / 69)  # the BH1750 count at MTreg 254
