"""`kerbline device flash` onto a board whose MicroPython build has a ROM partition (ROMFS).

The virtual board's partition is a host file that `mpremote romfs deploy` writes through the board's
`vfs.rom_ioctl`, as on a ROMFS-enabled ESP32 build. The firmware package then runs from /rom, in place,
and the flash holds only boot.py, main.py and the config (docs/technician.md, docs/firmware.md "Memory").
"""
from __future__ import annotations

from pathlib import Path

from gateway.tools.firmware_build import build, romfs_image
from tests.tools.conftest import Bench
from tests.tools.test_flash import DEVICE_FILES, STEPS, board_files, steps_ok


def image(bench: Bench) -> bytes:
    return romfs_image(build(bench.root / "expected-build"))


def partition(bench: Bench) -> Path:
    assert bench.board.rom_partition is not None
    return bench.board.rom_partition


async def test_the_package_goes_into_the_rom_and_a_copy_on_the_flash_goes(rom_bench: Bench) -> None:
    await rom_bench.add("bin-0042")
    # a board flashed before with the files: its copy comes first on sys.path and would shadow the ROM
    (rom_bench.flash_dir / "kerbline").mkdir()
    (rom_bench.flash_dir / "kerbline" / "app.py").write_text("raise RuntimeError('the flash copy ran')\n")

    run = await rom_bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert steps_ok(run.out) == STEPS
    assert "image to write" in run.out and "ROM image and 4 files written" in run.out
    expected = image(rom_bench)
    assert partition(rom_bench).read_bytes()[:len(expected)] == expected
    on_board = set(board_files(rom_bench))
    assert {"boot.py", "main.py", "config.json"} <= on_board
    assert on_board - {"boot.py", "main.py", "config.json"} <= DEVICE_FILES, on_board
    assert not (rom_bench.flash_dir / "kerbline").exists()
    # the first report came from the firmware in the ROM: there is no other copy on the board
    assert "[8/8] first report ok" in run.out and "the flash copy ran" not in run.text


async def test_a_reflash_leaves_the_rom_as_it_is(rom_bench: Bench) -> None:
    await rom_bench.add("bin-0042")
    assert (await rom_bench.flash("bin-0042")).status == 0
    stamp = partition(rom_bench).stat().st_mtime_ns

    run = await rom_bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert "image already in place" in run.out and "0 to write, 0 to remove" in run.out
    assert partition(rom_bench).stat().st_mtime_ns == stamp
    assert "[8/8] first report ok" in run.out


async def test_a_rom_partition_too_small_for_the_image_gets_the_files_on_the_flash(small_rom_bench: Bench) -> None:
    await small_rom_bench.add("bin-0042")

    run = await small_rom_bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert "is smaller than the image" in run.out
    assert partition(small_rom_bench).read_bytes() == b"\xff" * 16384  # untouched
    assert (small_rom_bench.flash_dir / "kerbline" / "app.mpy").exists()
    assert "[8/8] first report ok" in run.out
