"""The device's command gate (kerbline.downlink) under the 64 KB MicroPython VM and CPython.

Commands are made on the gateway's side of the contract (gateway.wire, cbor2 + hmac: an implementation
independent of the firmware's), fed to the firmware's Downlink by tests/firmware/mp/downlink_run.py, and
what the Downlink did is compared line by line with what the contract says: genuine commands act once,
forged, malformed, misaddressed and replayed ones never act and are counted by reason, and a reboot does
not reopen a replay.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from gateway.wire import Command, build, seal_command
from tests.harness.micropython import run_micropython

MP_DIR = Path(__file__).resolve().parent / "mp"
DEVICES = {d["id"]: bytes.fromhex(d["key"]) for d in json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "devices.json").read_text())["devices"]}
DEV = "bin-0042"
KEY = DEVICES[DEV]
RUNNER = "import sys\nsys.path.insert(0, sys.argv[1])\nimport downlink_run\ndownlink_run.main(sys.argv[2], sys.argv[3])\n"


def cmd(cid: int, op: str, **args: Any) -> list[str]:
    return ["msg", seal_command(DEV, KEY, Command(cid, op, args)).hex()]


def raw(payload: Any, device: str = DEV, key: bytes = KEY) -> list[str]:
    """A correctly sealed message around any payload, to reach the command checks behind the MAC."""
    return ["msg", build(device, key, cbor2.dumps(payload)).hex()]


@pytest.fixture(params=["micropython", "cpython"])
def run_steps(request: pytest.FixtureRequest, mp_lib: Path) -> Iterator[Any]:
    """`run_steps(steps)` -> the program's output lines, under the VM of the parameter."""
    folders: list[str] = []

    def run(steps: list[list[str]]) -> list[str]:
        folder = tempfile.mkdtemp(prefix="kerbline-downlink-")
        folders.append(folder)
        spec = Path(folder) / "steps.json"
        spec.write_text(json.dumps({"device": DEV, "key": KEY.hex(), "steps": steps}))
        if request.param == "micropython":
            result = run_micropython(RUNNER, heap="64k", args=[str(mp_lib), folder, str(spec)])
            assert result.ok, result.describe()
            return result.stdout.splitlines()
        done = subprocess.run([sys.executable, str(MP_DIR / "downlink_run.py"), folder, str(spec)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.splitlines()

    yield run
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def without_logs(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("log ")]


def test_each_op_reaches_its_handler_with_its_arguments(run_steps) -> None:
    lines = run_steps([
        cmd(1, "time", time=1_767_225_600),
        cmd(2, "config", interval=600, night=[22, 6], label="north"),
        cmd(3, "ping"),
        cmd(4, "ack", boot=3, seq=17),
        cmd(5, "reboot"),
    ])
    assert without_logs(lines) == [
        "call time 1767225600 saved=1", "applied time",
        "call config [('interval', 600), ('label', 'north'), ('night', [22, 6])] saved=2", "applied config",
        "call ping  saved=3", "applied ping",
        "call ack 3 17 saved=3", "applied ack",  # an ack's cid is not written: a replayed ack changes nothing
        "call reboot  saved=5", "applied reboot",
        "rejected ",
    ]


def test_forged_malformed_and_misaddressed_commands_never_act(run_steps) -> None:
    genuine = seal_command(DEV, KEY, Command(7, "reboot", {}))
    flipped = bytearray(genuine)
    flipped[-1] ^= 0x01
    lines = run_steps([
        ["msg", flipped.hex()],                                                    # tag does not match
        ["msg", seal_command(DEV, DEVICES["bin-0043"], Command(7, "reboot", {})).hex()],  # another key
        ["msg", seal_command("lamp-0117", DEVICES["lamp-0117"], Command(7, "reboot", {})).hex()],
        ["msg", b"\x00garbage".hex()],
        ["msg", (b"\xd1" + b"\x00" * 1100).hex()],                                 # over 1024 bytes
        ["msg", genuine[:-3].hex()],                                               # truncated
        raw({1: 2, 10: 7, 11: "reboot", 12: {}}),                                  # version 2
        raw({1: 1, 10: 7, 11: "selfdestruct", 12: {}}),                            # unknown op
        raw({1: 1, 10: 7, 11: "ack", 12: {2: 1}}),                                 # ack without seq
        raw({1: 1, 10: 7, 11: "time", 12: {4: "noon"}}),                           # time not a number
        raw([1, 7, "reboot"]),                                                     # not a map
        ["msg", genuine.hex()],
    ])
    assert without_logs(lines) == [
        "refused bad_tag", "refused bad_tag", "refused kid_mismatch", "refused bad_cbor", "refused too_large",
        "refused bad_cbor", "refused bad_version", "refused bad_command", "refused bad_command",
        "refused bad_command", "refused bad_command",
        "call reboot  saved=7", "applied reboot",
        "rejected bad_cbor=2 bad_command=4 bad_tag=2 bad_version=1 kid_mismatch=1 too_large=1",
    ]


def test_replays_are_refused_across_reboots(run_steps) -> None:
    config = cmd(10, "config", interval=300)
    lines = run_steps([
        config,
        config,                       # the same command again
        cmd(9, "ping"),               # an older cid
        ["reboot"],
        config,                       # still refused: cid 10 was written before it acted
        cmd(11, "reboot"),
        ["reboot"],
        cmd(11, "reboot"),            # the reboot command cannot make the device reboot again
        cmd(12, "time", time=1_800_000_000),
    ])
    assert without_logs(lines) == [
        "call config [('interval', 300)] saved=10", "applied config",
        "refused replay", "refused replay",
        "boot last_cid=10",
        "refused replay",
        "call reboot  saved=11", "applied reboot",
        "boot last_cid=11",
        "refused replay",
        "call time 1800000000 saved=12", "applied time",
        "rejected replay=4",
    ]


def test_ack_cids_are_written_by_the_next_other_command(run_steps) -> None:
    lines = run_steps([
        cmd(1, "ping"),
        cmd(2, "ack", boot=1, seq=1),
        cmd(3, "ack", boot=1, seq=2),
        cmd(3, "ack", boot=1, seq=2),  # refused in RAM all the same
        ["reboot"],                    # only cid 1 was written: a replayed ack 2 or 3 is harmless
        cmd(3, "ack", boot=1, seq=2),
        cmd(4, "ping"),
        ["reboot"],
    ])
    assert without_logs(lines) == [
        "call ping  saved=1", "applied ping",
        "call ack 1 1 saved=1", "applied ack",
        "call ack 1 2 saved=1", "applied ack",
        "refused replay",
        "boot last_cid=1",
        "call ack 1 2 saved=1", "applied ack",
        "call ping  saved=4", "applied ping",
        "boot last_cid=4",
        "rejected replay=1",
    ]


def test_unreadable_state_is_said_and_the_guard_starts_over(run_steps) -> None:
    lines = run_steps([cmd(5, "ping"), ["garble_state"], ["reboot"], cmd(1, "ping")])
    logs = [line for line in lines if line.startswith("log ")]
    assert len(logs) == 1 and re.fullmatch(r"log downlink: \S+/cid unreadable, replay guard starts over", logs[0])
    assert without_logs(lines) == ["call ping  saved=5", "applied ping", "boot last_cid=-1",
                                   "call ping  saved=1", "applied ping", "rejected "]


def test_a_flood_of_forgeries_is_counted_but_logged_sparingly(run_steps) -> None:
    forged = seal_command(DEV, DEVICES["bin-0043"], Command(1, "reboot", {})).hex()
    lines = run_steps([["msg", forged]] * 100)
    logs = [line for line in lines if line.startswith("log ")]
    assert logs == [f"log downlink: refused bad_tag ({n} so far)" for n in (1, 2, 4, 8, 16, 32, 64)]
    assert lines[-1] == "rejected bad_tag=100"
    assert not any(line.startswith("call") for line in lines)
