"""The spool: durable submit with group commit, dedup that survives restarts, the byte bound (routine
reports thinned, alarms kept), cursors, dead letters, and what happens when the disk refuses a commit."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.spool import DeadLetter, ReadMode, Spool, SpoolConfig, SpoolError, SubmitResult
from gateway.spool.dedup import MAX_ABOVE, MAX_BOOTS, DedupIndex, SeqWindow
from gateway.spool.records import encode_readings
from gateway.wire.units import MEASUREMENTS
from gateway.wire.model import Reading
from tests.harness.reports import BASE_TIME, bin_report, report

RAW = bytes(range(86))


def config(tmp_path: Path, **overrides: object) -> SpoolConfig:
    return SpoolConfig(path=tmp_path / "spool.db", **overrides)  # type: ignore[arg-type]


def stored_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT device, boot, seq, is_alarm FROM reports ORDER BY id").fetchall()


async def test_database_is_wal_with_full_sync(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        assert await spool.submit(bin_report("bin-0042", 3, 17), RAW) is SubmitResult.STORED

        def pragmas(store):  # noqa: ANN001, ANN202
            return (store.conn.execute("PRAGMA journal_mode").fetchone()[0],
                    store.conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await spool._run(pragmas) == ("wal", 2)  # 2 = FULL: every COMMIT fsyncs the WAL


async def test_report_is_stored_with_everything_the_batcher_needs(tmp_path: Path) -> None:
    r = report("lamp-0117", 2, 5, ("lux", 310), ("lamp", True), ("alarm", "lamp_fail"), ("temp", 21.5))
    r = type(r)(r.device, r.boot, r.seq, r.time, r.uptime,
                r.readings + (Reading("energy", 1200, "Wh", 2.5, True),))
    async with Spool(config(tmp_path)) as spool:
        assert await spool.submit(r, RAW, arrival_ns=1_800_000_000_123_456_789) is SubmitResult.STORED
        (got,) = (await spool.read(0, 100, 1 << 20)).reports
    assert (got.device, got.boot, got.seq, got.arrival_ns) == ("lamp-0117", 2, 5, 1_800_000_000_123_456_789)
    assert (got.time, got.time_estimated, got.is_alarm) == (BASE_TIME, False, True)
    assert got.readings == r.readings
    assert [type(x.value) for x in got.readings] == [int, bool, str, float, int]
    with sqlite3.connect(tmp_path / "spool.db") as conn:
        assert conn.execute("SELECT raw FROM reports").fetchone()[0] == RAW


async def test_report_without_device_time_gets_the_arrival_time_marked_estimated(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        await spool.submit(report("bin-0042", 1, 1, ("fill", 3), time=None, uptime=5000), RAW,
                           arrival_ns=1_790_000_000_500_000_000)
        await spool.submit(report("bin-0042", 1, 2, ("fill", 3), time=None, uptime=6000), RAW,
                           time_s=1_790_000_001.25, time_estimated=True)
        first, second = (await spool.read(0, 100, 1 << 20)).reports
    assert (first.time, first.time_estimated, first.uptime) == (1_790_000_000.5, True, 5000)
    assert (second.time, second.time_estimated) == (1_790_000_001.25, True)


async def test_duplicates_are_named_and_survive_a_restart(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        results = [await spool.submit(bin_report("bin-0042", 3, seq), RAW) for seq in (1, 3, 2, 3, 1)]
        assert results == [SubmitResult.STORED] * 3 + [SubmitResult.DUPLICATE] * 2
        assert await spool.submit(bin_report("bin-0042", 4, 1), RAW) is SubmitResult.STORED  # new boot
        assert await spool.submit(bin_report("bin-0043", 3, 1), RAW) is SubmitResult.STORED  # other device
    async with Spool(config(tmp_path)) as spool:
        for device, boot, seq in [("bin-0042", 3, 1), ("bin-0042", 3, 2), ("bin-0042", 3, 3),
                                  ("bin-0042", 4, 1), ("bin-0043", 3, 1)]:
            assert await spool.submit(bin_report(device, boot, seq), RAW) is SubmitResult.DUPLICATE
        assert await spool.submit(bin_report("bin-0042", 3, 4), RAW) is SubmitResult.STORED
        assert spool.stats().counters.duplicates == 5
    assert len(stored_rows(tmp_path / "spool.db")) == 6


async def test_duplicates_within_one_group_commit(tmp_path: Path) -> None:
    async with Spool(config(tmp_path, group_wait_s=0.05)) as spool:
        results = await asyncio.gather(*(spool.submit(bin_report("bin-0042", 1, 7), RAW) for _ in range(5)))
    assert sorted(r.value for r in results) == ["duplicate"] * 4 + ["stored"]
    assert len(stored_rows(tmp_path / "spool.db")) == 1


async def test_one_commit_covers_a_burst_of_submits(tmp_path: Path) -> None:
    async with Spool(config(tmp_path, group_wait_s=0.05)) as spool:
        results = await asyncio.gather(*(spool.submit(bin_report("bin-0042", 1, seq), RAW)
                                         for seq in range(1, 501)))
        assert results == [SubmitResult.STORED] * 500
        commits = spool.stats().counters.commits
    assert commits <= 5  # a burst of 500 submits shares a handful of fsyncs, not 500


async def test_a_commit_takes_at_most_group_max_reports(tmp_path: Path) -> None:
    async with Spool(config(tmp_path, group_max=10, group_wait_s=0.05)) as spool:
        await asyncio.gather(*(spool.submit(bin_report("bin-0042", 1, seq), RAW) for seq in range(1, 101)))
        assert spool.stats().counters.commits >= 10


async def test_a_batch_commits_together_and_answers_in_its_order(tmp_path: Path) -> None:
    batch = [(bin_report("bin-0042", 1, seq), RAW, 1, float(BASE_TIME), False) for seq in (1, 2, 1, 3, 2)]
    async with Spool(config(tmp_path)) as spool:
        results = await spool.submit_many(batch)
        assert spool.stats().counters.commits == 1
        assert spool.stats().pending == 0
    assert [r.value for r in results] == ["stored", "stored", "duplicate", "stored", "duplicate"]
    assert [row[2] for row in stored_rows(tmp_path / "spool.db")] == [1, 2, 3]


@pytest.mark.parametrize("size", [1, 3, 53, 512, 1300])
async def test_a_group_of_any_size_is_stored_whole_and_in_order(tmp_path: Path, size: int) -> None:
    """Inserts go in statements of power-of-two sizes (1300 = 512 + 512 + 256 + 16 + 4): every report
    lands, once, in submit order, and so do the dedup windows of devices spread over the group."""
    batch = [(bin_report(f"bin-{seq % 70:04d}", 1, seq // 70 + 1), RAW, 1, float(BASE_TIME), False)
             for seq in range(size)]
    async with Spool(config(tmp_path)) as spool:
        assert await spool.submit_many(batch) == [SubmitResult.STORED] * size
        assert await spool.submit_many(batch) == [SubmitResult.DUPLICATE] * size
    rows = stored_rows(tmp_path / "spool.db")
    assert [(device, boot, seq) for device, boot, seq, _ in rows] == [(r.device, r.boot, r.seq) for r, *_ in batch]
    async with Spool(config(tmp_path)) as spool:  # the dedup windows were written too
        assert await spool.submit_many(batch) == [SubmitResult.DUPLICATE] * size


async def test_a_batch_larger_than_group_max_is_not_split(tmp_path: Path) -> None:
    async with Spool(config(tmp_path, group_max=4, group_wait_s=0.05)) as spool:
        big = spool.submit_many([(bin_report("bin-0042", 1, seq), RAW, 1, float(BASE_TIME), False)
                                 for seq in range(1, 11)])
        small = [spool.submit_many([(bin_report("bin-0043", 1, seq), RAW, 1, float(BASE_TIME), False)])
                 for seq in range(1, 4)]
        assert await big == [SubmitResult.STORED] * 10
        assert [await s for s in small] == [[SubmitResult.STORED]] * 3
        commits = spool.stats().counters.commits
    assert commits == 2  # the batch of 10 alone (over group_max, whole), then the three of one together


async def test_submits_wait_when_max_pending_are_uncommitted(tmp_path: Path) -> None:
    highest = 0
    async with Spool(config(tmp_path, max_pending=4)) as spool:
        tasks = [asyncio.ensure_future(spool.submit(bin_report("bin-0042", 1, seq), RAW)) for seq in range(1, 201)]
        while not all(t.done() for t in tasks):
            highest = max(highest, spool.stats().pending)
            await asyncio.sleep(0)
        assert [t.result() for t in tasks] == [SubmitResult.STORED] * 200
    assert 1 <= highest <= 4


async def test_spool_full_thins_oldest_routine_reports_and_keeps_alarms(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, max_bytes=64 * 1024)
    async with Spool(cfg) as spool:
        await spool.set_sinks(["http", "file"])
        seq = 0
        alarms = []
        while spool.stats().counters.thinned_reports < 300:
            seq += 1
            is_alarm = seq % 10 == 0
            r = bin_report("bin-0042", 1, seq, 90, "full") if is_alarm else bin_report("bin-0042", 1, seq)
            if is_alarm:
                alarms.append(seq)
            assert await spool.submit(r, RAW) is SubmitResult.STORED
        stats = spool.stats()
        assert stats.bytes <= cfg.max_bytes
        assert stats.thinning
        assert "thinned" in spool.health().reasons[0]
        assert stats.counters.dropped_by_sink == {"http": stats.counters.thinned_reports,
                                                  "file": stats.counters.thinned_reports}
    rows = stored_rows(cfg.path)
    kept = [r[2] for r in rows]
    assert [r[2] for r in rows if r[3]] == alarms  # every alarm is still there
    routine = [s for s in kept if s % 10]
    # What is left of the routine reports is the newest run of them: the oldest went first.
    assert routine == [s for s in range(routine[0], seq + 1) if s % 10]
    assert routine[0] > 300
    assert any("thinned" in rec.getMessage() for rec in caplog.records)


async def test_spool_full_of_alarms_refuses_without_recording_the_report(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_bytes=64 * 1024)
    async with Spool(cfg) as spool:
        await spool.set_sinks(["http"])
        seq = 0
        while True:
            seq += 1
            result = await spool.submit(bin_report("bin-0042", 1, seq, 99, "fire"), RAW)
            if result is SubmitResult.FULL:
                break
            assert result is SubmitResult.STORED
        assert await spool.submit(bin_report("bin-0043", 1, 1), RAW) is SubmitResult.FULL
        assert spool.stats().counters.refused_full == 2
        assert spool.health().degraded
        # The sink takes everything: room again, the refused reports are new, not duplicates.
        await spool.ack_batch("http", spool.last_id, "key")
        assert not spool.health().degraded
        assert await spool.submit(bin_report("bin-0042", 1, seq, 99, "fire"), RAW) is SubmitResult.STORED
        assert await spool.submit(bin_report("bin-0043", 1, 1), RAW) is SubmitResult.STORED


async def test_reports_leave_only_when_every_sink_has_them(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        for seq in range(1, 11):
            await spool.submit(bin_report("bin-0042", 1, seq), RAW)
        cursors = await spool.set_sinks(["a", "b"])
        assert {c.delivered for c in cursors.values()} == {0}
        await spool.ack_batch("a", 10, "k1")
        assert spool.stats().reports == 10
        await spool.ack_batch("b", 4, "k2")
        assert spool.stats().reports == 6
        # A sink added later starts at the oldest report still stored; a sink removed stops holding any.
        cursors = await spool.set_sinks(["a", "c"])
        assert cursors["c"].delivered == 4 and "b" not in cursors
        await spool.ack_batch("c", 10, "k3")
        assert spool.stats().reports == 0
    with sqlite3.connect(tmp_path / "spool.db") as conn:
        assert conn.execute("SELECT sink, delivered FROM cursors ORDER BY sink").fetchall() == [("a", 10), ("c", 10)]


async def test_ids_are_never_reused_after_the_spool_empties(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        await spool.set_sinks(["a"])
        for seq in range(1, 4):
            await spool.submit(bin_report("bin-0042", 1, seq), RAW)
        await spool.ack_batch("a", spool.last_id, "k")
    async with Spool(config(tmp_path)) as spool:
        await spool.submit(bin_report("bin-0042", 1, 4), RAW)
        assert spool.last_id == 4
        assert [r.id for r in (await spool.read(3, 10, 1 << 20)).reports] == [4]


async def test_reads_respect_record_and_byte_limits(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        for seq in range(1, 11):
            await spool.submit(bin_report("bin-0042", 1, seq), RAW)  # 4 readings each
        by_count = await spool.read(0, 10, 1 << 20)
        assert (len(by_count.reports), by_count.records, by_count.upto, by_count.full) == (2, 8, 2, True)
        one = by_count.nbytes // 2
        by_bytes = await spool.read(2, 1000, 3 * one)
        assert ([r.seq for r in by_bytes.reports], by_bytes.full) == ([3, 4, 5], True)
        oversized = await spool.read(0, 1, 1)  # the first report always fits
        assert len(oversized.reports) == 1 and oversized.full
        none = await spool.read(0, 1, 1, take_one=False)
        assert none.reports == () and none.upto == 0 and none.full
        rest = await spool.read(5, 1000, 1 << 20)
        assert ([r.seq for r in rest.reports], rest.upto, rest.full) == ([6, 7, 8, 9, 10], 10, False)


async def test_dead_letters_are_kept_up_to_their_bound(tmp_path: Path) -> None:
    async with Spool(config(tmp_path, max_dead_letters=3, dead_letter_bytes=10)) as spool:
        await spool.set_sinks(["http"])
        for i in range(5):
            await spool.ack_batch("http", 0, f"key{i}", [DeadLetter("HTTP 400", "x" * 50, f"payload {i}")])
        letters = await spool.dead_letters("http")
        assert [d["batch_key"] for d in letters] == ["key4", "key3", "key2"]
        assert letters[0]["detail"] == "x" * 10 and letters[0]["payload"] == "payload 4"
        assert spool.stats().counters.dead_letters_dropped == 2


async def test_gateway_made_reports_are_numbered_in_boot_zero(tmp_path: Path) -> None:
    offline = (Reading("alarm", "offline", None),)
    async with Spool(config(tmp_path)) as spool:
        assert await spool.submit_local("bin-0042", offline, BASE_TIME) == 1
        assert await spool.submit_local("bin-0042", offline, BASE_TIME + 60) == 2
    async with Spool(config(tmp_path)) as spool:
        assert await spool.submit_local("bin-0042", offline, BASE_TIME + 120) == 3
        got = (await spool.read(0, 100, 1 << 20)).reports
    assert [(r.boot, r.seq, r.is_alarm, r.time) for r in got] == [
        (0, 1, True, BASE_TIME), (0, 2, True, BASE_TIME + 60), (0, 3, True, BASE_TIME + 120)]


async def test_a_failed_commit_stores_nothing_and_says_so(tmp_path: Path) -> None:
    async with Spool(config(tmp_path)) as spool:
        assert await spool.submit(bin_report("bin-0042", 1, 1), RAW) is SubmitResult.STORED
        # A disk that is full: SQLite refuses to grow the database past its current size.
        await spool._run(lambda store: store.conn.execute("PRAGMA max_page_count=" + str(
            store.conn.execute("PRAGMA page_count").fetchone()[0])))
        big = [report("bin-0042", 1, seq, *[("alarm", "fire")] * 32) for seq in range(2, 400)]
        outcomes = await asyncio.gather(*(spool.submit(r, RAW * 10) for r in big), return_exceptions=True)
        assert any(isinstance(o, SpoolError) for o in outcomes)
        assert spool.health().degraded and "commits failing" in spool.health().reasons[0]
        failed = [r for r, o in zip(big, outcomes) if isinstance(o, SpoolError)]
        await spool._run(lambda store: store.conn.execute("PRAGMA max_page_count=1073741823"))
        # Nothing of a failed group was recorded, not even in the dedup state: the resend is stored.
        assert await spool.submit(failed[0], RAW) is SubmitResult.STORED
        assert not spool.health().degraded
    seqs = {r[2] for r in stored_rows(tmp_path / "spool.db")}
    assert not {r.seq for r in failed[1:]} & seqs


async def test_submit_after_close_is_refused(tmp_path: Path) -> None:
    spool = Spool(config(tmp_path))
    await spool.open()
    await spool.close()
    with pytest.raises(SpoolError):
        await spool.submit(bin_report("bin-0042", 1, 1), RAW)


def test_seq_window_fills_gaps_and_gives_up_old_ones() -> None:
    w = SeqWindow()
    assert [w.accept(s) for s in (1, 2, 4, 4, 3, 3, 5)] == [True, True, True, False, True, False, True]
    assert (w.contiguous, w.above) == (5, set())
    for s in range(7, 7 + MAX_ABOVE + 1):  # seq 6 never comes
        assert w.accept(s)
    assert w.contiguous == 6 + MAX_ABOVE + 1 and not w.above  # the gap at 6 was given up
    assert not w.accept(6)
    assert SeqWindow.decode(3, SeqWindow(3, {5, 9}).encode_above()) == SeqWindow(3, {5, 9})


def test_old_boots_are_forgotten_and_refused() -> None:
    index = DedupIndex()
    for boot in range(1, MAX_BOOTS + 3):
        assert index.accept("bin-0042", boot, 1)
    assert index.floor("bin-0042") == 3
    assert index.seen("bin-0042", 1, 99) and not index.accept("bin-0042", 2, 5)
    assert index.accept("bin-0042", 3, 2)  # the oldest boot still tracked
    assert index.next_seq("bin-0042", 3) == 3


async def test_reading_objects_rendered_by_the_spool(tmp_path: Path) -> None:
    light = report("lamp-0117", 2, 5, ("lamp", False), ("alarm", "lamp_fail"), ("curr", 0.10000000149011612))
    light = type(light)(light.device, light.boot, light.seq, light.time, light.uptime,
                        light.readings + (Reading("energy", 1200, "Wh", 2.5, True),))
    async with Spool(config(tmp_path)) as spool:
        await spool.submit(light, RAW)
        await spool.submit(report("bin-0042", 1, 1, ("temp", 21.5), time=None, uptime=10), RAW,
                           arrival_ns=1_800_000_000_123_456_000)
        objects = await spool.read(0, 100, 1 << 20, mode=ReadMode.JSON)
        lines = await spool.read(0, 100, 1 << 20, mode=ReadMode.LINES)
    assert objects.reports == () and objects.arrivals[1] == 1_800_000_000_123_456_000
    got = json.loads(f"[{objects.text}]")
    assert got == [json.loads(line) for line in lines.text.split("\n")]
    common = {"device": "lamp-0117", "boot": 2, "seq": 5, "time_estimated": False}
    assert got[:4] == [
        {**common, "name": "lamp", "value": False, "unit": None, "time": BASE_TIME},
        {**common, "name": "alarm", "value": "lamp_fail", "unit": None, "time": BASE_TIME},
        {**common, "name": "curr", "value": got[2]["value"], "unit": "mA", "time": BASE_TIME},
        {**common, "name": "energy", "value": 1200, "unit": "Wh", "time": BASE_TIME + 2.5},
    ]
    assert struct.pack("<f", got[2]["value"]) == struct.pack("<f", 0.10000000149011612)  # float32 kept
    assert got[4] == {"device": "bin-0042", "boot": 1, "seq": 1, "name": "temp", "value": 21.5, "unit": "Cel",
                      "time": pytest.approx(1_800_000_000.123456, abs=1e-5), "time_estimated": True}


_NAMES = st.sampled_from(sorted(MEASUREMENTS)) | st.text(max_size=8)
_UNITS = st.none() | st.sampled_from(sorted({m.unit for m in MEASUREMENTS.values() if m.unit})) | st.text(max_size=6)
_VALUES = (st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
           | st.text(max_size=8))
_OFFSETS = st.sampled_from([0, 0.0, -0.0, 1, 2.5]) | st.integers(-(10**6), 10**6)
_USUAL_READING = st.sampled_from(sorted((n, m.unit) for n, m in MEASUREMENTS.items() if m.kind == "v" and m.unit)).flatmap(
    lambda name_unit: st.builds(Reading, st.just(name_unit[0]), st.integers(-(2**70), 2**70) | st.floats(
        allow_nan=False, allow_infinity=False), st.just(name_unit[1]), st.just(0), st.just(False)))
_READINGS = st.lists(_USUAL_READING | st.builds(Reading, _NAMES, _VALUES, _UNITS, _OFFSETS, st.booleans()),
                     min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readings=_READINGS)
def test_readings_json_is_the_json_encoders_whatever_the_path(readings: list[Reading]) -> None:
    """The usual readings are written from prepared pieces; the text must be what the JSON encoder
    writes for the stored rows, and read back to the same readings."""
    defaults = {name: m.unit for name, m in MEASUREMENTS.items()}
    rows = [[r.name, r.value, r.unit if r.unit is not None else defaults.get(r.name), r.time_offset,
             *((1,) if r.is_sum else ())] for r in readings]
    assert encode_readings(readings) == json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(encode_readings(readings)) == rows


def test_every_usual_reading_of_the_table_is_written_as_the_json_encoder_writes_it() -> None:
    for name, m in MEASUREMENTS.items():
        for value in (0, -7, 2**64, 21.5, -0.0, 1e-7):
            readings = [Reading(name, value, m.unit)] if m.kind == "v" and m.unit else []
            rows = [[r.name, r.value, r.unit, 0] for r in readings]
            assert encode_readings(readings) == json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
