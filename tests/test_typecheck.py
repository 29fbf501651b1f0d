"""The CPython code (gateway, simulator) is type-checked with mypy --strict, as configured in
pyproject.toml; the firmware is MicroPython and is checked by mpy-cross and its own tests instead."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gateway_and_simulator_pass_mypy_strict() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "gateway", "simulator"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
