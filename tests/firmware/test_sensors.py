"""Sensor filtering and faults, lamp control, config checking, boot counter and crash log.

The cases (tests/firmware/mp/{sonar,light,state}_cases.py) run on the scripted board, the tests' stand-in
for the ESP32's pins behind the board layer: each program once under the 64 KB MicroPython VM with the
compiled firmware, as on a board, and once under CPython, which runs the same modules in the simulator's
fleet.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.micropython import run_micropython

MP_DIR = Path(__file__).resolve().parent / "mp"
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
PROGRAMS = ("sonar_cases", "light_cases", "state_cases")
CASES = [(program, name) for program in PROGRAMS
         for name in re.findall(r"^def (case_\w+)\(", (MP_DIR / f"{program}.py").read_text(), re.M)]
RUNNER = "import sys\nsys.path.insert(0, sys.argv[1])\nimport {program}\n{program}.main(sys.argv[2])\n"
VMS = ("micropython", "cpython")


@pytest.fixture(scope="module")
def results(mp_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[dict[str, str], str]]:
    """Each program run once per VM: (vm, program) -> (case name -> its line, whole output)."""
    out: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
    for program in PROGRAMS:
        for vm in VMS:
            folder = tmp_path_factory.mktemp(f"{program}-{vm}")
            if vm == "micropython":
                run = run_micropython(RUNNER.format(program=program), heap="64k", args=[str(mp_lib), str(folder)],
                                      timeout=120)
                output = run.output
            else:
                done = subprocess.run([sys.executable, str(MP_DIR / f"{program}.py"), str(folder)],
                                      capture_output=True, text=True, timeout=120,
                                      env={"PYTHONPATH": f"{MP_DIR}:{FIRMWARE}"})
                output = done.stdout + done.stderr
            lines = {m.group(1): line for line in output.splitlines()
                     if (m := re.match(r"(?:ok|FAIL) (case_\w+)", line))}
            out[vm, program] = (lines, output)
    return out


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_case_is_listed(program: str) -> None:
    source = (MP_DIR / f"{program}.py").read_text()
    listed = re.search(r"CASES = \((.*?)\)", source, re.S)
    assert listed is not None
    assert re.findall(r"case_\w+", listed.group(1)) == [n for p, n in CASES if p == program]


@pytest.mark.parametrize("vm", VMS)
@pytest.mark.parametrize(("program", "name"), CASES)
def test_case(results: dict[tuple[str, str], tuple[dict[str, str], str]], vm: str, program: str, name: str) -> None:
    lines, output = results[vm, program]
    assert lines.get(name) == f"ok {name}", f"{vm} {program}:\n{output}"
