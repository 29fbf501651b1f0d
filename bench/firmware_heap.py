"""Firmware heap: the smallest MicroPython heap in which a full bin cycle and a light cycle run.

A "full cycle" is the real thing on the `sim` board (tests/firmware/simrig.py): boot.py and main.py from a
flashed device root, config check, boot counter, every sensor read over the sensor server's socket, the
report built, sealed and queued on flash, delivered over a real pty by the firmware's serial link and
acked by a gateway stand-in; for a bin two boots (the deep-sleep wake continues the boot), for a light
4 s of its endless loop with at least one report delivered. The heap is searched by bisection between
32 and 192 KB: the figure is the peak the run needs, fragmentation included, which is what decides
whether it fits. Also printed: the compiled .mpy set (the board's flash).

Each cycle is measured in the two ways a board can hold the firmware, both with the device's flash a
plain folder that is the VM's cwd (the firmware's paths are relative, and a board's cwd is its flash root):

- ROM: the `kerbline` package in a ROMFS image mounted at /rom (`firmware_build.romfs_image`), its
  bytecode run in place, boot.py and main.py on the flash. This is how the firmware is deployed, and the
  figure held to the budget. The image sits in the VM's heap but outside the figure: the VM gets the
  image on top and `simulator/devices/mpy/rom_partition.py` checks that the program is left exactly the
  usable heap of a VM of the size printed.
- flash: every .mpy on the writable filesystem, imported into the heap (a stock MicroPython build
  without a ROM partition), for comparison.

Then each kind again with its link over MQTT to a real mosquitto (the firmware's own MQTT 3.1.1 client,
QoS 1 reports, the `down` subscription), code in ROM.

The unix port is 64-bit: pointers, object headers and qstr pool entries are twice an ESP32's, so these
figures overstate an ESP32's need (docs/firmware.md, "Memory").
"""
from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from gateway.tools.firmware_build import build, mpy_size, romfs_image
from simulator.devices.sensor_server import BenchHardware
from simulator.links.broker import Broker
from tests.firmware.simrig import KEYS, SimRig

BUDGET_KB = 64
BIN = {"id": "bin-0042", "kind": "bin", "key": KEYS["bin-0042"], "wake_s": 5,
       "pins": {"trig": 5, "echo": 18, "temp": 4, "batt": 34, "tilt": 27, "lid": 26}}
LIGHT = {"id": "lamp-0117", "kind": "light", "key": KEYS["lamp-0117"], "sample_s": 1, "report_s": 600,
         "pins": {"scl": 22, "sda": 21, "ldr": 35, "relay": 25, "pwm": 26, "volt": 32, "curr": 33}}


async def cycle_runs(firmware: Path, config: dict[str, Any], heap_kb: int, rom: bool,
                     broker: tuple[str, int] | None) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        rig = SimRig(Path(tmp) / "dev", firmware, json.loads(json.dumps(config)), BenchHardware(time_scale=0.001),
                     heap=f"{heap_kb}k", rooted=False, rom=rom, broker=broker)
        await rig.start()
        try:
            if config["kind"] == "bin":
                codes = [(await rig.boot(20)).returncode for _ in range(2)]
                ok = codes == [64, 64] and [(r.boot, r.seq) for r in rig.reports] == [(1, 1), (1, 2)]
            else:
                killed = (await rig.boot(4)).timed_out  # still running when stopped
                ok = killed and len(rig.reports) >= 1
            return ok and not (Path(tmp) / "dev" / "crash.log").exists() and not rig.rejected
        finally:
            await rig.close()


async def smallest_heap(firmware: Path, config: dict[str, Any], rom: bool,
                        broker: tuple[str, int] | None = None) -> int:
    low, high = 32, 192
    if not await cycle_runs(firmware, config, high, rom, broker):
        raise RuntimeError(f"the {config['kind']} cycle does not run even in {high} KB")
    while high - low > 1:
        mid = (low + high) // 2
        if await cycle_runs(firmware, config, mid, rom, broker):
            high = mid
        else:
            low = mid
    return high


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        firmware = Path(tmp) / "fw"
        files = build(firmware)
        print(f"firmware .mpy set on the board: {mpy_size(files)} bytes in "
              f"{sum(f.board_path.endswith('.mpy') for f in files)} files (budget 49152)")
        print(f"ROMFS image of the package: {len(romfs_image(files))} bytes")
        for config in (BIN, LIGHT):
            kb = await smallest_heap(firmware, config, rom=True)
            print(f"{config['kind']:5} full cycle on the sim board (serial link), code in ROM: runs in {kb} KB "
                  f"of heap ({kb / BUDGET_KB:.2f} x the {BUDGET_KB} KB budget, 64-bit unix port)")
            flash_kb = await smallest_heap(firmware, config, rom=False)
            print(f"{'':5} the same with every .mpy on the flash filesystem (imported into the heap): "
                  f"{flash_kb} KB ({flash_kb / kb:.2f} x)")
        broker = Broker(Path(tmp) / "broker", acl=False)
        broker.start()
        try:
            for config in (BIN, LIGHT):
                kb = await smallest_heap(firmware, config, rom=True, broker=(broker.host, broker.port))
                print(f"{config['kind']:5} full cycle over MQTT (mosquitto, QoS 1), code in ROM: runs in {kb} KB "
                      f"of heap ({kb / BUDGET_KB:.2f} x the budget)")
        finally:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
