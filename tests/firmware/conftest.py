"""Fixtures for the firmware tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.tools.firmware_build import build

MP_DIR = Path(__file__).resolve().parent / "mp"


@pytest.fixture(scope="session")
def mp_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/firmware/mp/ compiled by mpy-cross, for test programs too large to compile inside a 64 KB VM.

    The VM compiles a source file in its own heap, so a long test program dies of MemoryError before its
    first line runs; importing it precompiled (as the board imports the firmware) costs no compiler heap.
    Put this folder first on the VM's `sys.path` and import the program from there.
    """
    out = tmp_path_factory.mktemp("mp-lib")
    build(out, MP_DIR)
    return out
