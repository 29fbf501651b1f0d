"""A gateway killed with SIGKILL while reports are between submit and commit loses none it acknowledged.

The child process keeps 200 submits in flight and prints each (device, boot, seq) the moment its
`submit` resolves, which is when ingest would acknowledge it. The test kills it mid-stream, then opens
the same spool: every printed report is there, and the dedup state knows it (a resend is a duplicate).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.spool import Spool, SpoolConfig, SubmitResult
from tests.harness.reports import bin_report

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, itertools, sys
    from pathlib import Path
    from gateway.spool import Spool, SpoolConfig
    from tests.harness.reports import bin_report

    async def main():
        async with Spool(SpoolConfig(Path(sys.argv[1]), group_wait_s=0.001)) as spool:
            counter = itertools.count(1)
            print("open", flush=True)

            async def submitter():
                while True:
                    seq = next(counter)
                    result = await spool.submit(bin_report("bin-0042", 1, seq), b"raw message")
                    sys.stdout.write(f"{seq} {result.value}\\n")
                    sys.stdout.flush()

            await asyncio.gather(*(submitter() for _ in range(200)))

    asyncio.run(main())
""")


async def test_sigkill_between_submit_and_commit_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(db)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    acked: list[int] = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"open\n", child.stderr.read() if child.stderr else ""
        while len(acked) < 3000:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "child ended"
            number, result = line.split()
            assert result == b"stored"
            acked.append(int(number))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    acked += [int(line.split()[0]) for line in rest.splitlines() if line.endswith(b" stored")]
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {seq for (seq,) in conn.execute("SELECT seq FROM reports")}
    assert set(acked) <= stored

    async with Spool(SpoolConfig(db)) as spool:
        for acked_seq in acked[-300:]:
            assert await spool.submit(bin_report("bin-0042", 1, acked_seq), b"resend") is SubmitResult.DUPLICATE
        # Reports that were never acknowledged are stored now when new, and duplicates when committed.
        nxt = max(stored) + 1
        assert await spool.submit(bin_report("bin-0042", 1, nxt), b"resend") is SubmitResult.STORED
