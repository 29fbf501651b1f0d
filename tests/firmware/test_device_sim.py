"""Faithful devices: the compiled firmware on the `sim` board, one MicroPython process per boot.

Each device really talks to `simulator/devices/sensor_server.py` over its TCP socket for every sensor
read and output, and to a gateway stand-in over a real pty with the contract's frames (the firmware's own
serial link, acks and commands). Every report is checked with the gateway's decoder. Also: safe mode on
a missing or invalid config, crash log and safe mode after a crash loop, the skip pin, the watchdog.

Heap: SIM_HEAP, the 64 KB budget, with the firmware deployed as on a board: the package in a ROMFS image
(its bytecode runs in place), boot.py, main.py and the config on the flash, which is the VM's cwd.
docs/firmware.md ("Memory") gives the measured figures.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.tools.firmware_build import build
from simulator.devices.sensor_server import BenchHardware
from tests.firmware.simrig import KEYS, SimRig
from tests.harness.mosquitto import Mosquitto

SIM_HEAP = "64k"
BIN_PINS = {"trig": 5, "echo": 18, "temp": 4, "batt": 34, "tilt": 27, "lid": 26}
BIN: dict[str, Any] = {"id": "bin-0042", "kind": "bin", "key": KEYS["bin-0042"], "wake_s": 5, "pins": BIN_PINS}
LIGHT: dict[str, Any] = {"id": "lamp-0117", "kind": "light", "key": KEYS["lamp-0117"], "sample_s": 1, "report_s": 600,
         "pins": {"scl": 22, "sda": 21, "ldr": 35, "relay": 25, "pwm": 26, "volt": 32, "curr": 33}}


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("firmware")
    build(out)
    return out


@pytest.fixture
async def make_rig(tmp_path: Path, firmware: Path) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[SimRig] = []

    async def make(config: dict[str, Any], hardware: BenchHardware | None = None,
                   broker: tuple[str, int] | None = None) -> SimRig:
        rig = SimRig(tmp_path / f"dev{len(rigs)}", firmware, json.loads(json.dumps(config)),
                     hardware or BenchHardware(time_scale=0.001), heap=SIM_HEAP, rooted=False, rom=True,
                     broker=broker)
        await rig.start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


def values(report: Any) -> dict[str, Any]:
    return {r.name: r.value for r in report.readings}


async def test_bin_device_talks_to_the_sensor_server(make_rig: Callable[..., Any]) -> None:
    hardware = BenchHardware(dist_mm=400, temp=23.5, time_scale=0.001)
    rig = await make_rig(BIN, hardware)
    first = await rig.boot()
    second = await rig.boot()
    assert (first.returncode, second.returncode) == (64, 64), first.output + second.output
    a, b = rig.reports
    assert (a.boot, a.seq, b.boot, b.seq) == (1, 1, 1, 2)  # the wake continued the boot
    assert values(a)["fill"] == 70 and abs(values(a)["dist"] - 400) <= 2  # 400 mm: 300 mm empty of 1000
    assert values(a)["temp"] == 23.5 and values(a)["batt"] == 3800
    device = rig.server.devices["bin-0042"]
    assert device.requests >= 5 + 3 and hardware.boots == 2  # 5 pings, temp, batt, switches, per boot
    assert [ms for ms, _ in hardware.sleeps] == [pytest.approx(900_000, abs=5_000)] * 2
    assert hardware.sleeps[0][1] == ["tilt", "lid"]
    assert rig.rejected == [] and not rig.server.rejected


async def test_bin_device_commands_over_serial(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(BIN)
    rig.on_next_report = [("time", {4: 1764345600}), ("config", {"interval": 600}), ("ping", {})]
    boot = await rig.boot()
    assert boot.returncode == 64, boot.output
    first, pinged = rig.reports
    assert first.time is None and pinged.time is not None and pinged.time >= 1764345600
    assert rig.hardware.sleeps[0][0] <= 600_000  # the new interval at once
    assert json.loads((rig.root / "config.json").read_text())["interval"] == 600
    rig.on_next_report = [("reboot", {})]
    assert (await rig.boot()).returncode == 65
    after = await rig.boot()  # reset cause soft: a new boot number
    assert after.returncode == 64 and rig.reports[-1].boot == 2


async def test_bin_device_over_mqtt(make_rig: Callable[..., Any], mosquitto: Mosquitto) -> None:
    hardware = BenchHardware(dist_mm=400, time_scale=0.001)
    rig = await make_rig(BIN, hardware, broker=(mosquitto.host, mosquitto.port))
    rig.on_next_report = [("ping", {})]
    boots = [await rig.boot(), await rig.boot()]
    assert [b.returncode for b in boots] == [64, 64], boots[0].output + boots[1].output
    # the ping arrived while the first wake was still sending: the second report is its answer, sent at once
    assert [(r.boot, r.seq) for r in rig.reports[:3]] == [(1, 1), (1, 2), (1, 3)]
    assert values(rig.reports[0])["fill"] == 70
    assert not (rig.root / "crash.log").exists() and rig.rejected == []


async def test_light_device_over_mqtt(make_rig: Callable[..., Any], mosquitto: Mosquitto) -> None:
    hardware = BenchHardware(lux_value=3.0, time_scale=0.001)
    hardware.values["curr"] = 199.0
    rig = await make_rig(LIGHT, hardware, broker=(mosquitto.host, mosquitto.port))
    boot = await rig.boot(timeout=6)
    assert boot.timed_out, boot.output  # still running when stopped
    assert hardware.outputs == {"relay": 1, "pwm": 1023}
    assert rig.reports and values(rig.reports[0])["lamp"] is True
    assert not (rig.root / "crash.log").exists() and rig.rejected == []


async def test_light_device_drives_its_lamp(make_rig: Callable[..., Any]) -> None:
    hardware = BenchHardware(lux_value=3.0, time_scale=0.001)
    hardware.values["curr"] = 199.0
    rig = await make_rig(LIGHT, hardware)
    boot = await rig.boot(timeout=4)  # a light never ends on its own: stopped after 4 s
    assert boot.timed_out, boot.output
    assert hardware.outputs == {"relay": 1, "pwm": 1023}
    report = values(rig.reports[0])
    assert report["lamp"] is True and report["lux"] == 3 and report["volt"] == 230 and report["curr"] == 199


async def test_missing_config_is_safe_mode(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(BIN)
    (rig.root / "config.json").unlink()
    boot = await rig.boot()
    assert boot.returncode == 0  # main.py returned: the board sits at its REPL
    assert "KERBLINE SAFE MODE: config: /config.json is missing" in boot.output
    assert (rig.root / "safemode.txt").exists() and not (rig.root / "crash.log").exists()
    assert rig.reports == []


async def test_invalid_config_is_safe_mode_never_a_crash_loop(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig(BIN)
    raw = json.loads((rig.root / "config.json").read_text())
    raw["interval"] = 5
    (rig.root / "config.json").write_text(json.dumps(raw))
    for _ in range(2):
        boot = await rig.boot()
        assert boot.returncode == 0 and "'interval' must be an integer 60..86400" in boot.output


async def test_crash_loop_ends_in_safe_mode_with_a_fault_report(make_rig: Callable[..., Any]) -> None:
    hardware = BenchHardware(time_scale=0.001)
    del hardware.values["batt"]  # the battery ADC answers nothing: every wake crashes
    rig = await make_rig(BIN, hardware)
    codes = [(await rig.boot()).returncode for _ in range(3)]
    assert codes == [65, 65, 65]  # crash -> logged -> reset
    log = (rig.root / "crash.log").read_text().splitlines()
    assert len(log) == 3 and all("crash" in line and "OSError: [Errno 5] EIO" in line for line in log)
    safe = await rig.boot()
    assert safe.returncode == 0 and "KERBLINE SAFE MODE: 3 crashes in a row" in safe.output
    (fault,) = rig.reports  # the safe mode's report, delivered over the serial link
    got = values(fault)
    assert got["alarm"] == "sensor_fault" and "OSError" in got["fault"]
    assert (await rig.boot()).returncode == 0  # still safe mode (and reported again): it does not clear itself
    assert "fault" in values(rig.reports[-1])
    hardware.values["batt"] = 3800.0  # the technician fixes the wiring, then at the REPL:
    cleared = await rig.boot(program="import kerbline.safemode as s\ns.clear()\n")
    assert cleared.returncode == 0 and not (rig.root / "safemode.txt").exists()
    assert (await rig.boot()).returncode == 64  # the application runs again
    assert values(rig.reports[-1])["batt"] == 3800 and "fault" not in values(rig.reports[-1])


async def test_skip_pin_keeps_the_application_off(make_rig: Callable[..., Any]) -> None:
    hardware = BenchHardware(time_scale=0.001)
    hardware.switches["skip"] = True
    rig = await make_rig({**BIN, "pins": {**BIN_PINS, "skip": 0}}, hardware)
    boot = await rig.boot()
    assert boot.returncode == 0 and "skip pin held" in boot.output
    assert rig.reports == [] and hardware.sleeps == []


async def test_watchdog_resets_a_stuck_loop(make_rig: Callable[..., Any]) -> None:
    rig = await make_rig({**BIN, "wdt_ms": 5000})
    rig.server.hang.add("temp")  # the DS18B20's bus locks up: the main loop stops making progress
    boot = await rig.boot(timeout=20)
    assert boot.returncode == -9 and not boot.timed_out, boot.output  # SIGKILL from its watchdog
    assert (rig.root / ".reset").read_text().split()[0] == "wdt"
    rig.server.hang.clear()
    again = await rig.boot()
    assert again.returncode == 64 and len(rig.reports) == 1
    assert "watchdog reset" in (rig.root / "crash.log").read_text()
