"""The firmware deployed as a board's ROM partition: the ROMFS image, and the harness's stand-in for one.

The 64 KB heap figures of the cycle tests rest on two promises checked here: the image is exactly the
board's compiled package, run in place from /rom; and the VM, although the image has to sit in its
heap, leaves the program exactly the heap a VM of the nominal size has (`simulator/devices/rom.py`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from gateway.tools.firmware_build import build, romfs_image
from tests.harness.micropython import compiled_firmware, compiled_rom, run_micropython

FILL = """
import gc
gc.collect()
held = []
try:
    while True:
        held.append(bytearray(480))
except MemoryError:
    pass
n = len(held)
held = None
print("FIT", n)
"""

WALK = """
import os, hashlib, binascii
def walk(path):
    for name, kind, *_ in os.ilistdir(path):
        full = path + "/" + name
        if kind == 0x4000:
            walk(full)
        else:
            with open(full, "rb") as f:
                print(full[5:], binascii.hexlify(hashlib.sha256(f.read()).digest()).decode())
walk("/rom")
"""

IMPORT_COST = """
import gc, sys
gc.collect()
before = gc.mem_free()
import kerbline.wire.cose, kerbline.store.queue, kerbline.links.serial
gc.collect()
print("COST", before - gc.mem_free(), kerbline.wire.cose.__file__)
"""


def fit(result_output: str) -> int:
    return int(next(line.split()[1] for line in result_output.splitlines() if line.startswith("FIT")))


def test_a_vm_with_a_rom_leaves_the_program_exactly_its_nominal_heap() -> None:
    for heap in ("64k", "100k"):
        plain = run_micropython(FILL, heap=heap, firmware=None)
        with_rom = run_micropython(FILL, heap=heap, firmware=None, rom=compiled_rom())
        assert plain.ok and with_rom.ok, plain.describe() + with_rom.describe()
        # 480-byte buffers are 16 blocks with their object: the same count, give or take one
        assert abs(fit(plain.output) - fit(with_rom.output)) <= 1, (heap, plain.output, with_rom.output)


def test_the_image_holds_the_boards_compiled_package_and_nothing_else(tmp_path: Path) -> None:
    files = build(tmp_path / "fw")
    image = tmp_path / "fw.romfs"
    image.write_bytes(romfs_image(files))
    result = run_micropython(WALK, heap="64k", firmware=None, rom=image)
    assert result.ok, result.describe()
    listed = dict(line.split() for line in result.stdout.splitlines())
    expected = {f.board_path: hashlib.sha256(f.local_path.read_bytes()).hexdigest()
                for f in files if f.board_path.endswith(".mpy")}
    assert listed == expected
    assert "boot.py" not in listed and "main.py" not in listed  # MicroPython runs those from the flash


def test_modules_imported_from_rom_leave_their_bytecode_in_flash() -> None:
    from_rom = run_micropython(IMPORT_COST, heap="128k", firmware=None, rom=compiled_rom())
    from_flash = run_micropython(IMPORT_COST, heap="128k", firmware=compiled_firmware())
    assert from_rom.ok and from_flash.ok, from_rom.describe() + from_flash.describe()
    rom_cost, rom_file = from_rom.stdout.split()[1:3]
    flash_cost = from_flash.stdout.split()[1]
    assert rom_file.startswith("/rom/kerbline/")
    assert int(rom_cost) < 0.7 * int(flash_cost), (rom_cost, flash_cost)
