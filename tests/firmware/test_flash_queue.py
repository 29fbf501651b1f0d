"""The flash queue (kerbline.store.queue): order, acks, the bound, torn records and power cuts.

The cases (tests/firmware/mp/queue_cases.py) and the power-cut sweep (queue_powercut.py) are MicroPython
programs: each runs under the 64 KB VM with the compiled firmware, as on a board, and under CPython, which
runs the same firmware modules in the simulator's fleet. A property test adds random operation sequences
under CPython, checked against a model of what must be in the queue.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerbline.store.queue import HEADER, FlashQueue
from tests.harness.micropython import run_micropython

MP_DIR = Path(__file__).resolve().parent / "mp"
CASE_NAMES = re.findall(r"^def (case_\w+)\(", (MP_DIR / "queue_cases.py").read_text(), re.M)
VMS = ("micropython", "cpython")
# A program that imports a compiled test module from the folder given first and runs its main(folder).
RUNNER = "import sys\nsys.path.insert(0, sys.argv[1])\nimport {module}\n{module}.main(sys.argv[2])\n"


@pytest.fixture
def flash_dir() -> Iterator[Path]:
    """A folder standing in for the board's flash; in RAM where the host has /dev/shm, since the power-cut
    sweep does thousands of small file operations."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = Path(tempfile.mkdtemp(prefix="kerbline-flash-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_program(vm: str, module: str, folder: Path, mp_lib: Path) -> tuple[int, str]:
    """Run tests/firmware/mp/<module>.py's main(folder) under `vm`; (exit code, output)."""
    if vm == "micropython":
        result = run_micropython(RUNNER.format(module=module), heap="64k", args=[str(mp_lib), str(folder)],
                                 timeout=300)
        return result.returncode, result.output
    done = subprocess.run([sys.executable, str(MP_DIR / f"{module}.py"), str(folder)], capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module", params=VMS)
def case_results(request: pytest.FixtureRequest, mp_lib: Path) -> tuple[str, dict[str, str], str]:
    """All cases run once per VM: (vm, case name -> its line, whole output)."""
    folder = Path(tempfile.mkdtemp(prefix="kerbline-flash-"))
    try:
        _, output = run_program(request.param, "queue_cases", folder, mp_lib)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = {}
    for line in output.splitlines():
        match = re.match(r"(?:ok|FAIL) (case_\w+)", line)
        if match:
            lines[match.group(1)] = line
    return request.param, lines, output


def test_case_list_is_the_one_the_program_runs() -> None:
    source = (MP_DIR / "queue_cases.py").read_text()
    listed = re.search(r"CASES = \((.*?)\)", source, re.S)
    assert listed is not None
    assert re.findall(r"case_\w+", listed.group(1)) == CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_queue_case(case_results: tuple[str, dict[str, str], str], name: str) -> None:
    vm, lines, output = case_results
    assert lines.get(name) == f"ok {name}", f"{vm}:\n{output}"


@pytest.mark.parametrize("vm", VMS)
def test_power_cut_at_every_write_step(vm: str, flash_dir: Path, mp_lib: Path) -> None:
    code, output = run_program(vm, "queue_powercut", flash_dir, mp_lib)
    summary = re.search(r"cuts (\d+) undone (\d+) compacted (\d+) completed (\d+) torn (\d+) recovery_cuts (\d+) "
                        r"dropped_routine (\d+) dropped_alarm (\d+) failures (\d+)", output)
    assert code == 0 and summary is not None, output
    cuts, undone, compacted, completed, torn, recovery, dropped_routine, dropped_alarm, failures = map(
        int, summary.groups())
    assert failures == 0, output
    # the sweep reached what it is meant to exercise: torn records, cuts between a compaction and the
    # append that needed it, cuts inside a recovery, and both kinds of drop
    assert cuts > 3000 and completed == 1 and undone + compacted + completed == cuts
    assert torn > 1000 and compacted > 0 and recovery > 500
    assert dropped_routine > 0 and dropped_alarm > 0


# ----------------------------------------------------------------- random sequences, CPython

MAX_BYTES = 400
keys_ = st.tuples(st.integers(1, 3), st.integers(0, 12))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.booleans(), st.integers(1, 60)),
        st.tuples(st.just("ack"), keys_),
        st.tuples(st.just("one"), keys_),
        st.tuples(st.just("reopen")),
    ),
    max_size=60,
)


class Model:
    """What must be in the queue: every appended report not acked, minus the drops the queue counted."""

    def __init__(self) -> None:
        self.present: dict[tuple[int, int], tuple[bool, bytes]] = {}  # key -> (alarm, message)
        self.next = (1, 1)

    def new_key(self) -> tuple[int, int]:
        key = self.next
        self.next = (key[0], key[1] + 1) if key[1] < 12 else (key[0] + 1, 1)
        return key


def contents(q: FlashQueue) -> dict[tuple[int, int], tuple[bool, bytes]]:
    entries = q.peek(10_000)
    keys = [(b, s) for b, s, _, _ in entries]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), "out of order or repeated"
    return {(b, s): (a, m) for b, s, a, m in entries}


@settings(max_examples=150, deadline=None)
@given(operations)
def test_random_operations_keep_every_promise(ops: list[tuple]) -> None:
    folder = tempfile.mkdtemp(prefix="kerbline-flash-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        path = os.path.join(folder, "q.log")
        q = FlashQueue(path, MAX_BYTES)
        model = Model()
        for op in ops:
            added = None
            before_routine, before_alarm = q.dropped_routine, q.dropped_alarm
            if op[0] == "add":
                key = added = model.new_key()
                message = bytes([key[1]]) * op[2]
                q.append(message, key[0], key[1], op[1])
                model.present[key] = (op[1], message)
            elif op[0] == "ack":
                b, s = op[1]
                gone = [k for k in model.present if k <= (b, s)]
                assert q.ack(b, s) == len(gone)
                for k in gone:
                    del model.present[k]
            elif op[0] == "one":
                key = op[1]
                overflow = q.ack_overflow
                if q.ack_one(*key):
                    del model.present[key]
                else:
                    assert key not in model.present or q.ack_overflow == overflow + 1
            else:
                q = FlashQueue(path, MAX_BYTES)
                assert q.torn == 0
                q.dropped_routine, q.dropped_alarm = before_routine, before_alarm
            got = contents(q)
            dropped = {k: v for k, v in model.present.items() if k not in got}
            for k in got:
                assert got[k] == model.present.get(k), f"{k} invented or changed"
            routine_dropped = [k for k, (alarm, _) in dropped.items() if not alarm]
            alarms_dropped = [k for k, (alarm, _) in dropped.items() if alarm]
            assert len(routine_dropped) == q.dropped_routine - before_routine
            assert len(alarms_dropped) == q.dropped_alarm - before_alarm
            if alarms_dropped:  # an alarm goes only when no older routine report is left to go instead
                assert not [k for k, (alarm, _) in got.items() if not alarm and k != added]
            kept_routine = [k for k, (alarm, _) in got.items() if not alarm]
            assert all(k < min(kept_routine) for k in routine_dropped) if kept_routine else True
            for k in dropped:
                del model.present[k]
            size = os.path.getsize(path) if os.path.exists(path) else 0
            assert q.bytes_used == size <= MAX_BYTES
            assert len(q) == len(got)
        again = FlashQueue(path, MAX_BYTES)
        assert contents(again) == contents(q) and again.torn == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_record_layout_is_the_documented_one(tmp_path: Path) -> None:
    q = FlashQueue(str(tmp_path / "q.log"), 1000)
    q.append(b"hello", 7, 9, True)
    data = (tmp_path / "q.log").read_bytes()
    assert HEADER == 14 and len(data) == 19
    assert data[:12] == bytes([0x4B, 0x01, 0, 5, 0, 0, 0, 7, 0, 0, 0, 9]) and data[14:] == b"hello"
