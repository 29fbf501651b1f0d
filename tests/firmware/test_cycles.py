"""Each kind's cycle end to end on the scripted board, under the MicroPython VM with the compiled firmware.

The scenarios (tests/firmware/mp/{bin,light}_cycle_cases.py) run the real App, cycles, sensors and flash
queue; the link is a stand-in that takes each sealed report from the queue and prints it. Here every
report is checked with the gateway's own decoder (COSE tag under the device key, report shape) before its
content is looked at, so what is asserted is what a gateway would accept.

Heap: 64 KB, the budget, with the firmware deployed as on a board: the package in a ROMFS image whose
bytecode runs in place (`rom=compiled_rom()`), the test's own programs on the flash. docs/firmware.md
("Memory") gives the measured figures and bench/firmware_heap.py the smallest heap each cycle runs in.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.wire.messages import decode_serial_report
from gateway.wire.model import Report
from tests.harness.micropython import compiled_rom, run_micropython

KEYS = {"bin-0042": bytes.fromhex("cd128f3348a040664141d96140729e1b738956419d7b367d4294e99e7e79b1eb"),
        "lamp-0117": bytes.fromhex("2679c1e7ff7de74fcf9f630f5a2ce9fc3d4153b270329e4c5e6c476a48467066")}
CYCLE_HEAP = "64k"
INTERVAL_MS = 900_000


@dataclass
class Sent:
    alarm_flag: bool
    report: Report

    @property
    def values(self) -> dict[str, Any]:
        return {r.name: r.value for r in self.report.readings if r.name != "alarm"}

    @property
    def uptime(self) -> int:
        assert self.report.uptime is not None, "a report with time, not uptime"
        return self.report.uptime

    @property
    def alarms(self) -> list[str]:
        return [str(r.value) for r in self.report.readings if r.name == "alarm"]


@dataclass
class Run:
    events: list[tuple[str, Any]]
    output: str

    def of(self, kind: str) -> list[Any]:
        return [e for k, e in self.events if k == kind]

    @property
    def reports(self) -> list[Sent]:
        return self.of("R")


def scenario(tmp_path: Path, mp_lib: Path, name: str) -> Run:
    """Run one scenario in a fresh device root; every report is decoded as the gateway would."""
    root = tmp_path / "flash"
    shutil.copytree(mp_lib, root / "lib")
    program = name.split("_")[0] + "_cycle_cases"
    result = run_micropython(f"import {program}\n{program}.main({name!r})\n", heap=CYCLE_HEAP, vfs_root=root,
                             firmware=None, rom=compiled_rom(), timeout=60)
    assert result.returncode == 0, result.describe()
    events: list[tuple[str, Any]] = []
    for line in result.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "R":
            flag, message = rest.split()
            events.append(("R", Sent(flag == "1", decode_serial_report(bytes.fromhex(message), KEYS.get))))
        elif word == "S":
            ms, pins = rest.split(" ") if " " in rest else (rest, "")
            events.append(("S", (int(ms), [int(p) for p in pins.split(",") if p])))
        elif word == "P":
            events.append(("P", rest))
        elif word in ("O", "Q"):
            events.append((word, [int(v) for v in rest.split()]))
        elif word == "C":
            events.append(("C", json.loads(rest)))
        elif word in ("X", "T"):
            events.append((word, None))
    return Run(events, result.output)


def test_bin_wakes_reports_and_sleeps(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "bin_wakes")
    first, tilted, upright = run.reports
    assert first.values == {"fill": 10, "dist": 1001, "temp": 20, "batt": 3800}  # 5830 us at 20 degC
    assert first.alarms == [] and not first.alarm_flag
    assert first.report.uptime is not None and first.report.time is None  # the clock was never set
    # one boot across deep sleeps: seq goes on, uptime counts the sleep
    assert [(s.report.boot, s.report.seq) for s in run.reports] == [(1, 1), (1, 2), (1, 3)]
    assert tilted.uptime >= INTERVAL_MS > first.uptime
    # the tilt is a record, an alarm raised at once, and the queue keeps that report
    assert tilted.values["tilt"] is True and tilted.alarms == ["tilt"] and tilted.alarm_flag
    assert "tilt" not in upright.values and upright.alarms == []
    sleeps = run.of("S")
    assert all(0 < INTERVAL_MS - ms < 1000 for ms, _ in sleeps)  # the rest of the 15 minutes
    # wake pins: tilt (27) and lid (26), but not a switch that is already active
    assert [pins for _, pins in sleeps] == [[27, 26], [26], [27, 26]]


def test_bin_power_cut_starts_a_new_boot(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "bin_power_cut")
    assert [(s.report.boot, s.report.seq) for s in run.reports] == [(1, 1), (1, 2), (2, 1)]
    assert run.of("P") == ["13:1,13:0"]  # the sensors were powered only while sampling


def test_bin_alarms_with_hysteresis(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "bin_alarms")
    got = [(s.values["fill"], s.values["temp"], s.values["batt"], s.alarms, s.alarm_flag) for s in run.reports]
    assert got[0][0] == 85 and got[0][3] == ["full"] and got[0][4]  # raised: sent as an alarm
    assert got[1][0] == 75 and got[1][3] == ["full"] and not got[1][4]  # still full, nothing new
    assert got[2][0] == 69 and got[2][3] == []  # under full_at - 10: cleared
    assert got[3][1:] == (71, 3300, ["fire", "lowbatt"], True)
    assert got[4][1:] == (68.75, 3500, ["fire"], False)  # fire holds above 65 degC; 3500 mV clears lowbatt
    assert got[5][1:] == (62.5, 3520, [], False)


def test_bin_sensor_faults_never_invent_a_value(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "bin_sensor_faults")
    silent, no_temp, lid_open = run.reports
    assert "fill" not in silent.values and "dist" not in silent.values
    assert silent.alarms == ["sensor_fault"] and silent.alarm_flag
    assert "temp" not in no_temp.values and no_temp.values["fill"] == 10  # the sonar assumed 20 degC
    assert no_temp.alarms == ["sensor_fault"]
    assert lid_open.values == {"temp": 20, "batt": 3800, "lid": True} and lid_open.alarms == []
    assert run.of("S")[-1][1] == [27]  # the open lid does not wake it again


def test_bin_commands(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "bin_commands")
    before, pinged, after_reboot_config = run.reports
    assert before.report.time is None
    assert pinged.report.seq == 2 and pinged.report.time == 1764345600  # time set, then the ping's report
    assert run.of("S")[0][0] < 600_000  # the new interval, at once
    assert run.of("C")[0]["interval"] == 600  # and on flash for the next boots
    assert after_reboot_config.report.seq == 3
    assert run.events[-1] == ("X", None)  # reboot


def test_bin_without_gateway_keeps_reports(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "bin_no_gateway")
    assert run.reports == []
    assert [q[0] for q in run.of("Q")] == [1, 2, 3]
    # gave up after 8 s with nothing acked (not the whole wake_s of 20 s): the battery matters more
    assert all(INTERVAL_MS - 9_000 < ms <= INTERVAL_MS - 8_000 for ms, _ in run.of("S"))


def test_light_dusk(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "light_dusk")
    day, dusk, periodic = run.reports
    assert day.values["lux"] == 1000 and day.values["lamp"] is False and day.values["dim"] == 0
    assert dusk.values["lux"] == 6 and dusk.values["lamp"] is True and dusk.values["dim"] == 80
    # samples every 5 s (plus the BH1750's measuring time): the 2nd dark one (switch_n) at about 25 s switches
    # the lamp and is reported at once; then the periodic report 60 s later
    assert 25_000 <= dusk.uptime < 27_000
    assert 60_000 <= periodic.uptime - dusk.uptime < 65_000
    assert periodic.values["lamp"] is True and periodic.values["energy"] == 0  # 46 W for a minute: 0.8 Wh
    assert (dusk.values["volt"], dusk.values["curr"], dusk.values["power"]) == (230, 199, 46)
    assert run.of("O") == [[1, 818]]  # relay on, PWM at 80 %
    assert all(s.alarms == [] for s in run.reports)


def test_light_lamp_fail(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "light_lamp_fail")
    lit, failed = run.reports
    assert lit.values["lamp"] is True and lit.alarms == []  # just switched on: not judged yet
    assert failed.alarms == ["lamp_fail"] and failed.alarm_flag and 5_000 <= failed.uptime < 6_000


def test_light_keeps_working_without_gateway(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "light_no_gateway")
    assert run.of("O") == [[1, 1023]]  # lit at dusk with no link at all
    assert run.of("Q") == [[3]]  # at 0 s, the change at 20 s, periodic at 40 s: all kept on flash
    assert "link: OSError" in run.output


def test_light_bus_fault_falls_back(tmp_path: Path, mp_lib: Path) -> None:
    run = scenario(tmp_path, mp_lib, "light_bus_fault")
    (only,) = run.reports
    assert only.values["lux"] == 80 and only.alarms == ["sensor_fault"] and only.alarm_flag
    assert "bh1750: no answer on I2C" in run.output
