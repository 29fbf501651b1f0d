"""Firmware modules: what each one costs in heap and qstrs once imported, from ROM and from the flash.

The modules are imported one by one in the order a serial bin's boot and cycle import them, then the
light's and the MQTT link's own, under the MicroPython VM with a large heap (`-X heapsize=300k`, so
nothing is fragmented and the figure is the module's own); before and after each, `gc.collect()` and
`gc.mem_free()`, and `micropython.qstr_info()` for the qstrs. A module's figure includes any qstr pool
its names happened to fill (the jumps), and is 0 when an earlier module had imported it already. Two layouts: the package in a ROMFS image
(how the firmware is deployed: bytecode and constants stay in flash) and every .mpy on the filesystem
(a stock MicroPython build without a ROM partition). The ratio is flash over ROM.

A qstr costs twice: its entry in a pool and its text. Pools are allocated in one piece and double each
time: past 628 qstrs the VM needs a 7.3 KB block, which a fragmented 64 KB heap does not have; the last
lines say how far each kind of run is from it (docs/firmware.md, "Memory").
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from gateway.tools.firmware_build import build, romfs_image
from tests.harness.micropython import run_micropython

BOOT = ["compat", "board", "board.sim", "config", "startup", "mem", "persist", "crashlog", "wire.reject",
        "wire.hmac256", "wire.cbor", "wire.cose", "app", "store.queue", "sensors", "downlink", "wire.cobs",
        "wire.frame", "wire.command", "links.serial", "bin_cycle", "sensors.ultrasonic", "wire.report"]
LIGHT = ["light_cycle"]  # imports sensors.light and sensors.lamp
MQTT = ["links.mqtt", "links.mqtt_link"]
POOL_6_AT = 628  # qstrs at which the VM allocates its 7.3 KB qstr pool (64-bit unix port)
PROGRAM = """
import gc, micropython
def q():
    micropython.qstr_info()
gc.collect()
print("M start", gc.mem_free())
q()
{imports}
"""
STEP = "gc.collect()\nimport kerbline.{name}\ngc.collect()\nprint('M {name}', gc.mem_free())\nq()\n"


def measure(modules: list[str], **where: object) -> list[tuple[str, int, int]]:
    """(module, heap bytes, qstrs added) for each module in order."""
    program = PROGRAM.format(imports="".join(STEP.format(name=m) for m in modules))
    result = run_micropython(program, heap="300k", timeout=60, **where)  # type: ignore[arg-type]
    if not result.ok:
        raise RuntimeError(result.describe())
    marks = re.findall(r"^M (\S+) (\d+)$", result.stdout, re.M)
    qstrs = [int(n) for n in re.findall(r"n_qstr=(\d+)", result.stdout)]
    rows = []
    for i in range(1, len(marks)):
        rows.append((marks[i][0], int(marks[i - 1][1]) - int(marks[i][1]), qstrs[i] - qstrs[i - 1]))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp) / "fw")
        image = Path(tmp) / "fw.romfs"
        image.write_bytes(romfs_image(files))
        sizes = {f.board_path[len("kerbline/"):].removesuffix(".mpy").removesuffix("/__init__").replace("/", "."):
                 f.size for f in files}
        modules = BOOT + LIGHT + MQTT
        rom = measure(modules, firmware=None, rom=image)
        flash = measure(modules, firmware=Path(tmp) / "fw")
        print(f"{'module (import order)':24} {'.mpy B':>7} {'heap from ROM':>14} {'from flash':>11} {'ratio':>6} "
              f"{'qstrs':>6}")
        for (name, rom_heap, added), (_, flash_heap, _) in zip(rom, flash):
            ratio = f"{flash_heap / rom_heap:6.2f}" if rom_heap else "     -"  # 0: imported already by another
            print(f"{name:24} {sizes.get(name, 0):7} {rom_heap:14} {flash_heap:11} {ratio} {added:6}")
        total_rom, total_flash = sum(r[1] for r in rom), sum(f[1] for f in flash)
        print(f"{'all of them':24} {sum(sizes.get(m, 0) for m in modules):7} {total_rom:14} {total_flash:11} "
              f"{total_flash / total_rom:6.2f} {sum(r[2] for r in rom):6}")
        serial = [m for m in BOOT if m not in ("bin_cycle", "sensors.ultrasonic")]
        over_mqtt = [m for m in serial if m not in ("wire.cobs", "wire.frame", "links.serial")] + MQTT
        runs = (("serial bin", BOOT), ("serial light", serial + LIGHT),
                ("MQTT bin", over_mqtt + ["bin_cycle", "sensors.ultrasonic", "wire.report"]),
                ("MQTT light", over_mqtt + ["wire.report"] + LIGHT))
        for run, imported in runs:
            n = qstrs_after(imported, image)
            print(f"qstrs after a {run:12} imports its modules (VM and harness included): {n}, "
                  f"{POOL_6_AT - n} before the {POOL_6_AT}th")


def qstrs_after(modules: list[str], image: Path) -> int:
    program = "import micropython\n" + "".join(f"import kerbline.{m}\n" for m in modules) + "micropython.qstr_info()\n"
    result = run_micropython(program, heap="300k", firmware=None, rom=image)
    if not result.ok:
        raise RuntimeError(result.describe())
    return int(re.findall(r"n_qstr=(\d+)", result.stdout)[-1])

if __name__ == "__main__":
    main()
