"""JSON Lines sink: one object per reading with units written out, size-based rotation keeping N files."""
from __future__ import annotations

import json
from pathlib import Path

from gateway.upstream import BatchConfig, SinkSpec
from gateway.upstream.jsonl import JsonlSink, JsonlSinkConfig
from gateway.wire.model import Reading
from tests.harness.reports import BASE_TIME, bin_report, report
from tests.harness.upstream import FAST_RETRY, delivered_all, open_spool, running

RAW = b"cose message"


def jsonl_spec(path: Path, max_bytes: int = 1 << 20, keep: int = 5) -> SinkSpec:
    sink = JsonlSink(JsonlSinkConfig("file", path, max_bytes=max_bytes, keep=keep))
    return SinkSpec(sink, BatchConfig(max_records=4, window_s=0.01), FAST_RETRY)


async def test_one_object_per_reading_with_units_and_times(tmp_path: Path) -> None:
    out = tmp_path / "readings.jsonl"
    async with open_spool(tmp_path) as spool:
        await spool.submit(bin_report("bin-0042", 3, 17), RAW)
        await spool.submit(report("lamp-0117", 2, 1, ("lamp", True), time=None, uptime=4000), RAW,
                           arrival_ns=1_800_000_000_000_000_000)
        await spool.submit_local("bin-0043", (Reading("alarm", "offline", None, 0),), BASE_TIME + 900)
        async with running(spool, [jsonl_spec(out)]):
            await delivered_all(spool)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [
        {"device": "bin-0042", "boot": 3, "seq": 17, "name": "fill", "value": 42, "unit": "/100",
         "time": BASE_TIME + 17, "time_estimated": False},
        {"device": "bin-0042", "boot": 3, "seq": 17, "name": "dist", "value": 1234, "unit": "mm",
         "time": BASE_TIME + 17, "time_estimated": False},
        {"device": "bin-0042", "boot": 3, "seq": 17, "name": "temp", "value": 21.5, "unit": "Cel",
         "time": BASE_TIME + 17, "time_estimated": False},
        {"device": "bin-0042", "boot": 3, "seq": 17, "name": "batt", "value": 3712, "unit": "mV",
         "time": BASE_TIME + 17, "time_estimated": False},
        {"device": "lamp-0117", "boot": 2, "seq": 1, "name": "lamp", "value": True, "unit": None,
         "time": 1_800_000_000.0, "time_estimated": True},
        {"device": "bin-0043", "boot": 0, "seq": 1, "name": "alarm", "value": "offline", "unit": None,
         "time": BASE_TIME + 900, "time_estimated": False},
    ]


async def test_rotation_keeps_n_files_and_the_newest_lines(tmp_path: Path) -> None:
    out = tmp_path / "readings.jsonl"
    async with open_spool(tmp_path) as spool:
        async with running(spool, [jsonl_spec(out, max_bytes=2048, keep=2)]) as upstream:
            for seq in range(1, 61):
                await spool.submit(bin_report("bin-0042", 1, seq), RAW)
            await delivered_all(spool)
            sink = upstream.runners[0].sink
    files = sorted(p.name for p in tmp_path.glob("readings.jsonl*"))
    assert files == ["readings.jsonl", "readings.jsonl.1", "readings.jsonl.2"]
    assert sink.rotations > 3  # type: ignore[attr-defined]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.glob("readings.jsonl*"))
    kept = [json.loads(line) for name in ("readings.jsonl.2", "readings.jsonl.1", "readings.jsonl")
            for line in (tmp_path / name).read_text().splitlines()]
    seqs = [x["seq"] for x in kept]
    assert seqs == sorted(seqs) and seqs[-1] == 60  # oldest files went first; the newest lines are live
    assert seqs[0] > 1
