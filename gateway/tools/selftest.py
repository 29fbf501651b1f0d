"""`kerbline device selftest DEVICE --port PORT`: the firmware's self-test on the board, as a pass/fail table.

The board-side code is `firmware/kerbline/selftest.py` (it reads each wired sensor once through the
board layer and checks the link); it is not kept on the board's flash, so it is sent and run with
`mpremote run`, which also stops the application first (a reset starts it again after). Its `SELFTEST` lines are parsed into `Check`s.
The board must be this device: the self-test's config line names the id on the board, and another id
is an error (the technician has the wrong board or the wrong port in hand).
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.tools.board_fs import BoardFs
from gateway.tools.firmware_build import FIRMWARE_DIR
from gateway.tools.registry_file import read_devices
from gateway.tools.steps import StepError

SELFTEST_SOURCE = FIRMWARE_DIR / "kerbline" / "selftest.py"
_PREFIX = "SELFTEST "


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS or FAIL
    detail: str


def parse(output: str) -> tuple[list[Check], int | None]:
    """The checks in the self-test's output and its END count (None when it did not finish)."""
    checks: list[Check] = []
    end: int | None = None
    for line in output.splitlines():
        if not line.startswith(_PREFIX):
            continue
        name, _, rest = line[len(_PREFIX):].rstrip("\r").partition(" ")
        if name == "END":
            end = int(rest) if rest.isdigit() else None
            continue
        status, _, detail = rest.partition(" ")
        if status in ("PASS", "FAIL"):
            checks.append(Check(name, status, detail))
    return checks, end


def selftest(device_id: str, port: str, registry: Path, timeout: float = 60.0) -> list[Check]:
    if device_id not in read_devices(registry):
        raise StepError(f"{device_id} is not in the registry {registry}", "check the id (or --registry)")
    board = BoardFs(port)
    print(f"self-test of {device_id} on {port}", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="kerbline-selftest-") as script:
        script.write(SELFTEST_SOURCE.read_text("utf-8") + "\nrun()\n")
        script.flush()
        try:
            output = board.run_file(Path(script.name), lambda line: None, timeout)
        except StepError as exc:
            if "no module named 'kerbline" in exc.why:
                raise StepError(f"the board on {port} holds no Kerbline firmware",
                                f"flash it first: kerbline device flash {device_id} --port {port}") from None
            raise
    board.reset()  # the self-test stopped the application; start it again
    checks, end = parse(output)
    if end is None:
        last = [line for line in output.splitlines() if line.strip()][-1:] or ["(nothing)"]
        raise StepError(f"the self-test did not finish on the board; its last words: {last[0].strip()}",
                        "flash the device again (its firmware may be older than these tools), then retry")
    config = next((c for c in checks if c.name == "config"), None)
    if config is not None and config.status == "PASS" and config.detail.split(" ")[0] != device_id:
        raise StepError(f"the board on {port} is {config.detail.split(' ')[0]}, not {device_id}",
                        "check the port (`kerbline device ports`), or flash this board as the device")
    return checks


def print_table(checks: list[Check], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    width = max([len(c.name) for c in checks] + [5])
    print(f"{'CHECK':<{width}}  RESULT  DETAIL", file=stream)
    for c in checks:
        print(f"{c.name:<{width}}  {c.status:<6}  {c.detail}", file=stream)
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{len(checks) - failed} passed, {failed} failed", file=stream, flush=True)
