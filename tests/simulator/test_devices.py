"""Faithful devices: the runner's boot loop (exit codes, watchdog, crashes, power), and the unchanged firmware
in a heap-limited MicroPython process reporting over a pty to a gateway.wire decoder on the other side."""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulator.devices.rom import heap_bytes
from simulator.devices.runner import DEFAULT_HEAP, MAX_CRASHES, DeviceRunner, State
from tests.simulator.devices_rig import BenchDevice, rom


def flash_with(root: Path, main: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(main)
    return root


def runner_for(flash: Path, **kw) -> DeviceRunner:  # type: ignore[no-untyped-def]
    """A runner on `flash` with the firmware's ROM partition (kept beside the test's folders)."""
    return DeviceRunner("bin-0001", flash, rom(flash.parent / "firmware-cache"), **kw)


async def run_until_idle(runner: DeviceRunner, timeout: float = 30.0) -> None:
    """Run until the device sits at its REPL (exit 0) or is left off; then end the run."""
    task = asyncio.ensure_future(runner.run())
    await until(lambda: runner.state in (State.IDLE, State.HALTED), timeout)
    final = runner.state
    runner.stop()
    await asyncio.wait_for(task, 10)
    runner.state = final


async def until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_runner_follows_the_exit_codes(tmp_path: Path) -> None:
    flash = flash_with(tmp_path / "dev", """
import sys
try:
    n = int(open("n").read())
except OSError:
    n = 0
open("n", "w").write(str(n + 1))
print("boot", n)
sys.exit((64, 65, 3, 0)[n])  # deep sleep over, machine.reset(), the VM dies, the program ends
""")
    lines: list[str] = []
    runner = runner_for(flash, on_line=lambda d, t: lines.append(t), crash_pause_s=0.01)
    await run_until_idle(runner)
    s = runner.stats
    assert (s.boots, s.deep_sleeps, s.resets, s.crashes) == (4, 1, 1, 1)
    assert runner.state is State.IDLE and lines == ["boot 0", "boot 1", "boot 2", "boot 3"]
    assert (tmp_path / "dev.console.log").read_text().splitlines() == lines


async def test_a_vm_that_keeps_dying_is_left_off(tmp_path: Path) -> None:
    flash = flash_with(tmp_path / "dev", "import sys\nsys.exit(7)\n")
    runner = runner_for(flash, crash_pause_s=0.01)
    await run_until_idle(runner)
    assert runner.state is State.HALTED and runner.stats.crashes == MAX_CRASHES


async def test_a_boot_has_the_firmware_in_rom_and_the_budget_heap(tmp_path: Path) -> None:
    flash = flash_with(tmp_path / "dev", """
import gc, sys
import kerbline.wire.cbor as cbor
print("path", sys.path)
print("from", cbor.__file__)
gc.collect()
print("free", gc.mem_free())
""")
    lines: list[str] = []
    runner = runner_for(flash, on_line=lambda d, t: lines.append(t))
    await run_until_idle(runner)
    assert runner.stats.crashes == 0, lines
    assert lines[0] == "path ['', '.frozen', '/rom', '/rom/lib', 'lib']"
    assert lines[1] == "from /rom/kerbline/wire/cbor.mpy"  # imported from the ROM, not the flash
    free = int(lines[2].split()[1])
    # the VM is bigger by the image, but the program has the usable heap of a 64 KB VM, less what it used
    assert DEFAULT_HEAP == "64k" and runner.vm_heap > heap_bytes("64k") + runner.rom.stat().st_size
    assert runner.app_heap - 16384 < free < runner.app_heap <= heap_bytes("64k")


async def test_watchdog_kill_boots_again(tmp_path: Path) -> None:
    flash = flash_with(tmp_path / "dev", """
import os, sys
try:
    open("killed").close()
except OSError:
    open("killed", "w").close()
    os.system("kill -9 $PPID")  # what the sim board's watchdog thread does
sys.exit(0)
""")
    runner = runner_for(flash)
    await run_until_idle(runner)
    assert runner.stats.watchdog == 1 and runner.stats.boots == 2


async def test_power_cut_kills_at_once_and_clears_rtc_memory(tmp_path: Path) -> None:
    flash = flash_with(tmp_path / "dev", """
import time
for name in (".rtc", ".clock", ".reset"):
    open(name, "w").write("x")
print("up")
time.sleep(60)
""")
    lines: list[str] = []
    runner = runner_for(flash, on_line=lambda d, t: lines.append(t))
    task = asyncio.ensure_future(runner.run())
    await until(lambda: lines == ["up"])
    runner.power_cut()
    await until(lambda: runner.state is State.OFF)
    assert not any((flash / name).exists() for name in (".rtc", ".clock", ".reset"))
    assert runner.stats.crashes == 0 and runner.stats.watchdog == 0  # our own cut is neither
    runner.power_on()
    await until(lambda: lines == ["up", "up"])
    assert runner.stats.boots == 2 and runner.stats.power_cuts == 1
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert runner.state is State.STOPPED


async def test_faithful_bin_reports_over_a_pty_across_deep_sleeps(tmp_path: Path) -> None:
    dev = BenchDevice(tmp_path / "street", settings={"interval": 60})
    await dev.start()
    try:
        await dev.gateway.wait_reports(3)
    finally:
        await dev.stop()
    reports = dev.gateway.reports[:3]
    assert [(r.boot, r.seq) for r in reports] == [(1, 1), (1, 2), (1, 3)]  # one boot, continued by each wake
    assert dev.runner.stats.deep_sleeps >= 2
    for r in reports:
        values = {x.name: x.value for x in r.readings}
        # bench hardware: 1000 mm below a sonar 150 mm above the full level of a 900 mm bin, 20 C, 3800 mV
        assert abs(values["dist"] - 1000) <= 2
        assert values["fill"] == 6
        assert values["temp"] == 20 and abs(values["batt"] - 3800) <= 2
        assert r.time is None and r.uptime is not None  # nobody set its clock
    assert dev.gateway.rejected == []


async def test_power_cut_loses_nothing_that_was_on_flash(tmp_path: Path) -> None:
    dev = BenchDevice(tmp_path / "street", settings={"interval": 60, "wake_s": 2})
    await dev.start()
    try:
        dev.gateway.ack = False  # nothing acked: every report stays in the flash queue
        await dev.gateway.wait_reports(2)
        dev.runner.power_cut()
        await until(lambda: dev.runner.state is State.OFF)
        dev.gateway.ack = True
        dev.runner.power_on()
        await until(lambda: any(r.boot == 2 for r in dev.gateway.reports), 60)
        await until(lambda: dev.runner.stats.deep_sleeps >= 1, 60)
    finally:
        await dev.stop()
    keys = {(r.boot, r.seq) for r in dev.gateway.reports}
    assert {(1, 1), (1, 2), (2, 1)} <= keys  # boot 1's unacked reports came again after the cut
    assert dev.runner.stats.power_cuts == 1
