"""Compile `firmware/` into the `.mpy` set that goes on a board.

A board runs bytecode, not source: compiling on the device would need tens of KB of heap that an ESP32
does not have to spare (the codecs alone do not import from source under a 64 KB heap). `boot.py` and
`main.py` stay source because MicroPython only runs those names at start-up; every other module becomes
`.mpy`. A file mpy-cross rejects fails the build with mpy-cross's message.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
SOURCE_ONLY = frozenset({"boot.py", "main.py"})
# MicroPython-subset modules that a device never imports (checking received reports, for the simulator
# and the tests; the self-test, which the technician's tools send over the REPL when asked): compiled
# for the tests, left off a board's flash.
HOST_ONLY = frozenset({"kerbline/wire/report_parse.py", "kerbline/selftest.py"})


class BuildError(RuntimeError):
    """mpy-cross refused a file; the message names it and quotes mpy-cross."""


@dataclass(frozen=True)
class BuiltFile:
    board_path: str  # path on the board, e.g. "kerbline/wire/cbor.mpy"
    local_path: Path
    sha256: str
    size: int


def mpy_cross_path() -> str:
    """The mpy-cross next to the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpy-cross")
    return str(beside) if beside.exists() else (shutil.which("mpy-cross") or "mpy-cross")


def micropython_path() -> Path:
    """The unix-port VM launcher next to the running interpreter (`.venv/bin/micropython`), else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return beside
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError("no micropython launcher: run scripts/bootstrap.sh (pip install -e '.[dev]')")
    return Path(found)


def _module_name(relative: Path) -> str:
    """kerbline/wire/cbor.py -> kerbline.wire.cbor; kerbline/wire/__init__.py -> kerbline.wire."""
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _newer(target: Path, source: Path) -> bool:
    return target.exists() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns


def build(out_dir: Path, source_dir: Path = FIRMWARE_DIR, mpy_cross: str | None = None,
          for_board: bool = True) -> list[BuiltFile]:
    """Compile every firmware file into `out_dir` (skipping ones already up to date); list the set.

    `for_board=False` also compiles the HOST_ONLY modules, for tests that run them under MicroPython.
    """
    compiler = mpy_cross or mpy_cross_path()
    built: list[BuiltFile] = []
    for source in sorted(source_dir.rglob("*.py")):
        relative = source.relative_to(source_dir)
        if "__pycache__" in relative.parts or (for_board and relative.as_posix() in HOST_ONLY):
            continue
        if relative.as_posix() in SOURCE_ONLY:
            target = out_dir / relative
            if not _newer(target, source):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        else:
            target = out_dir / relative.with_suffix(".mpy")
            if not _newer(target, source):
                target.parent.mkdir(parents=True, exist_ok=True)
                # -s: tracebacks name the module by its import name, which the import has already interned as
                # a qstr; a file name would cost every module one more qstr for good (docs/firmware.md, "Memory")
                result = subprocess.run(
                    [compiler, "-o", str(target), "-s", _module_name(relative), str(source)],
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    raise BuildError(f"mpy-cross rejected {relative}: {result.stderr.strip() or result.stdout.strip()}")
        built.append(BuiltFile(target.relative_to(out_dir).as_posix(), target, _sha256(target), target.stat().st_size))
    return built


def romfs_image(files: list[BuiltFile]) -> bytes:
    """A ROMFS image (mpremote's format) of the built set's `.mpy` modules, for a board's ROM partition.

    On a board whose MicroPython has a ROMFS partition (MICROPY_VFS_ROM) the image is mounted at /rom and
    its bytecode runs in place, in flash: the heap then holds only what the code makes, not the code.
    `boot.py` and `main.py` are not in it: MicroPython runs those two from the writable filesystem.
    """
    from mpremote.romfs import VfsRomWriter  # the technician's tool that also deploys the image

    tree: dict[str, Any] = {}
    for f in files:
        if f.board_path.endswith(".mpy"):
            *folders, name = f.board_path.split("/")
            node = tree
            for folder in folders:
                node = node.setdefault(folder, {})
            node[name] = f.local_path.read_bytes()
    writer = VfsRomWriter()

    def add(node: dict[str, Any]) -> None:
        for name, entry in sorted(node.items()):
            if isinstance(entry, dict):
                writer.opendir(name)
                add(entry)
                writer.closedir()
            else:
                writer.mkfile(name, entry)

    add(tree)
    return bytes(writer.finalise())


def mpy_size(files: list[BuiltFile]) -> int:
    """Bytes of compiled `.mpy` in a build (the 48 KB budget counts these)."""
    return sum(f.size for f in files if f.board_path.endswith(".mpy"))


if __name__ == "__main__":
    target_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "build/firmware")
    files = build(target_dir)
    for f in files:
        print(f"{f.size:6d}  {f.board_path}")
    print(f"{mpy_size(files):6d}  total .mpy bytes in {len(files)} files -> {os.fspath(target_dir)}")
