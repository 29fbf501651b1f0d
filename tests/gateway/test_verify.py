"""Verify stage pieces: the quarantine's two bounds, the rate-limited rejection log, the timebase."""
from __future__ import annotations

import logging

import pytest

from gateway.timebase import Timebase
from gateway.verify import Quarantine, RejectionLog
from gateway.verify.quarantine import KEEP_BYTES
from gateway.wire import Reading, Report


def test_quarantine_count_bound_pushes_out_the_oldest() -> None:
    q = Quarantine(max_frames=3, max_bytes=1 << 20)
    for i in range(5):
        q.add("mqtt", "kerbline/v1/bin-0001/up", "bin-0001", "bad_tag", "", bytes([i]) * 10)
    assert len(q) == 3 and q.evicted == 2
    assert [f["raw_hex"][:2] for f in q.list()] == ["04", "03", "02"]  # newest first


def test_quarantine_byte_bound_and_truncation() -> None:
    q = Quarantine(max_frames=100, max_bytes=3 * KEEP_BYTES)
    q.add("mqtt", "t", None, "too_large", "", b"\xaa" * 100_000)  # kept cut to KEEP_BYTES
    (held,) = q.list()
    assert held["size"] == 100_000 and held["truncated"] and len(held["raw_hex"]) == 2 * KEEP_BYTES
    for _ in range(3):
        q.add("serial", "/dev/ttyUSB0", "bin-0001", "bad_cbor", "", b"\xbb" * KEEP_BYTES)
    assert q.bytes <= 3 * KEEP_BYTES
    assert all(f["reason"] == "bad_cbor" for f in q.list())
    assert q.list(device="bin-0001", reason="bad_cbor", limit=2) == q.list()[:2]


def test_rejection_log_writes_a_burst_then_sums_up(caplog: pytest.LogCaptureFixture) -> None:
    log = RejectionLog(burst=3, window_s=3600)
    with caplog.at_level(logging.INFO, logger="gateway.verify"):
        for _ in range(10):
            log.record("bad_tag", "bin-0001", "mqtt", "topic", "MAC check failed")
        log.record("bad_cbor", "bin-0002", "serial", "/dev/x", "")
    lines = [r for r in caplog.records if r.getMessage() == "rejected"]
    assert len(lines) == 4
    fields = lines[0].kerbline_fields  # type: ignore[attr-defined]
    assert fields["device"] == "bin-0001" and fields["reason"] == "bad_tag"
    log.window_s = 0.0
    with caplog.at_level(logging.INFO, logger="gateway.verify"):
        log.flush()
    summary = [r for r in caplog.records if r.getMessage() == "rejections not logged one by one"]
    assert summary and summary[0].kerbline_fields["count"] == 7  # type: ignore[attr-defined]


def _report(device: str, boot: int, seq: int, time: int | None = None, uptime: int | None = None) -> Report:
    return Report(device, boot, seq, time, uptime, (Reading("fill", 1, "/100"),))


def test_device_time_when_sane_else_estimated_from_the_freshest_report() -> None:
    tb = Timebase(min_valid=1_600_000_000, max_future_s=300)
    now = 1_800_000_000.0
    assert tb.settle(_report("d", 1, 1, time=1_799_999_990), int(now * 1e9)) == (1_799_999_990.0, False)
    # a clock never set (1970) or far in the future is not sane: the time is estimated
    t, estimated = tb.settle(_report("d", 1, 2, time=5, uptime=60_000), int(now * 1e9))
    assert estimated and t == pytest.approx(now)
    # a backlog report arriving late first, then a fresh one: the boot start tightens to the fresh one
    tb2 = Timebase(min_valid=1_600_000_000, max_future_s=300)
    t1, _ = tb2.settle(_report("e", 7, 1, uptime=10_000), int((now + 500) * 1e9))  # 500 s late
    assert t1 == pytest.approx(now + 500)
    t2, est2 = tb2.settle(_report("e", 7, 50, uptime=1_000_000), int((now - 10 + 1000) * 1e9))
    assert est2 and t2 == pytest.approx(now - 10 + 1000)
    assert tb2.boot_start("e", 7) == pytest.approx(now - 10)
    # the late report's time, had it come now, is now measured against the better start
    t3, _ = tb2.settle(_report("e", 7, 1, uptime=10_000), int((now + 2000) * 1e9))
    assert t3 == pytest.approx(now - 10 + 10)
    # a report with a sane time and uptime pins the boot start exactly
    tb2.settle(_report("e", 7, 60, time=int(now + 2000), uptime=1_500_000), int((now + 2001) * 1e9))
    assert tb2.boot_start("e", 7) == pytest.approx(now + 500)
