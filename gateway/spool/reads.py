"""Batch reads, done inside SQLite so the event loop does little per reading.

A read takes the reports after a cursor, cuts them at the record and byte limits with running sums,
and returns what the sink needs in one row, in one step:
- `ReadMode.REPORTS`: the reports as one JSON text, decoded into StoredReport objects by the caller
  (sinks that need Python values: SenML, NGSI-LD);
- `ReadMode.JSON` / `ReadMode.LINES`: the upstream reading objects already rendered by SQLite's JSON
  functions, comma- or newline-separated (the HTTP and MQTT JSON bodies, the JSON Lines file).
SQLite renders in C with the GIL released, on the database thread, so on a machine with two cores that
work runs beside the event loop instead of inside it. SQLite prints a REAL with 15 significant digits:
times come out to 10 microseconds, and values (exact in float32 on the wire) keep their float32 value.

Requires SQLite >= 3.25 (window functions) with JSON1, checked when the spool opens.
"""
from __future__ import annotations

import enum
import functools
import json
import sqlite3
from dataclasses import dataclass

from gateway.spool.records import StoredReport
from gateway.wire.model import Reading


class ReadMode(enum.Enum):
    REPORTS = "reports"
    JSON = "json"
    LINES = "lines"


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Reports after a cursor: `reports` (REPORTS mode) or `text` (JSON, LINES), and per report its
    arrival time. `upto` is the last id the read covered (reports thinned away inside the range are
    skipped); `full` says a limit stopped the read, so more reports wait after `upto`."""

    reports: tuple[StoredReport, ...]
    text: str
    arrivals: tuple[int, ...]
    records: int
    nbytes: int
    upto: int
    full: bool


@dataclass(frozen=True, slots=True)
class RawRead:
    """A read as the database thread returns it; `decode` runs in the caller's thread."""

    mode: ReadMode
    payload: str
    arrivals: str
    records: int
    nbytes: int
    upto: int
    full: bool

    def decode(self) -> ReadResult:
        reports: tuple[StoredReport, ...] = ()
        text = ""
        if self.mode is ReadMode.REPORTS:
            reports = tuple(
                StoredReport(row_id, device, boot, seq, arrival_ns, time_us / 1e6, bool(estimated), uptime,
                             bool(is_alarm), tuple(Reading(*fields) for fields in readings))
                for row_id, device, boot, seq, arrival_ns, time_us, estimated, uptime, is_alarm, readings
                in json.loads(self.payload))
        else:
            text = self.payload
        return ReadResult(reports, text, tuple(json.loads(self.arrivals)), self.records, self.nbytes, self.upto,
                          self.full)


# The reports after :after, with running sums of readings and readings-JSON bytes, cut at the limits
# (`t`); `c` also counts what lay beyond the cut, which tells a full read from a complete one.
_CUT = """
WITH c AS (
    SELECT *, sum(n) OVER w AS cn, sum(length(readings)) OVER w AS cb
    FROM (SELECT id, device, boot, seq, arrival_ns, time_us, time_estimated, uptime, is_alarm, n, readings
          FROM reports WHERE id > :after AND id <= :bound ORDER BY id LIMIT :rows)
    WINDOW w AS (ORDER BY id ROWS UNBOUNDED PRECEDING)
),
t AS (SELECT * FROM c WHERE (cn <= :records AND cb <= :bytes)
                         OR (:take_one AND id = (SELECT min(id) FROM c)) ORDER BY id)
"""

_REPORTS = """
SELECT json_group_array(json_array(id, device, boot, seq, arrival_ns, time_us, time_estimated, uptime,
                                   is_alarm, json(readings))) FROM t
"""

# One upstream object per reading: device, boot, seq, name, value, unit, time, time_estimated. A stored
# reading is [name, value, unit, offset(, sum)]; json_extract would turn true/false into 1/0, hence the CASE.
_OBJECTS = """
SELECT coalesce(group_concat(json_object(
    'device', t.device, 'boot', t.boot, 'seq', t.seq,
    'name', json_extract(r.value, '$[0]'),
    'value', CASE json_type(r.value, '$[1]') WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')
             ELSE json_extract(r.value, '$[1]') END,
    'unit', json_extract(r.value, '$[2]'),
    'time', t.time_us / 1000000.0 + json_extract(r.value, '$[3]'),
    'time_estimated', CASE t.time_estimated WHEN 0 THEN json('false') ELSE json('true') END), :sep), '')
FROM t, json_each(t.readings) AS r
"""

_SEPARATORS = {ReadMode.JSON: ",", ReadMode.LINES: "\n"}


@functools.lru_cache(maxsize=4)
def _query(mode: ReadMode) -> str:
    payload = _REPORTS if mode is ReadMode.REPORTS else _OBJECTS
    return (_CUT + f"SELECT ({payload}), (SELECT json_group_array(arrival_ns) FROM t), "
            "(SELECT count(*) FROM t), (SELECT coalesce(max(id), :after) FROM t), "
            "(SELECT coalesce(max(cn), 0) FROM t), (SELECT coalesce(max(cb), 0) FROM t), (SELECT count(*) FROM c)")


def read(conn: sqlite3.Connection, mode: ReadMode, after: int, bound: int, max_records: int, max_bytes: int,
         take_one: bool) -> RawRead:
    """Reports with after < id <= bound, at most `max_records` readings and `max_bytes` of readings JSON;
    with `take_one`, the first report even if it alone is larger."""
    payload, arrivals, taken, last, records, nbytes, seen = conn.execute(_query(mode), {
        "after": after, "bound": bound, "rows": max(max_records, 0) + 1, "records": max_records,
        "bytes": max_bytes, "take_one": take_one, "sep": _SEPARATORS.get(mode, "")}).fetchone()
    full = taken < seen or records >= max_records or nbytes >= max_bytes
    return RawRead(mode, payload, arrivals, records, nbytes, last if full else max(bound, after), full)


def check_sqlite() -> None:
    """Refuse to run on an SQLite without window functions or JSON1, with a message that says so."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT json_object('a', sum(1) OVER ())").fetchone()
    except sqlite3.OperationalError as exc:
        raise RuntimeError(f"the spool needs SQLite >= 3.25 with JSON1; this Python has "
                           f"{sqlite3.sqlite_version}: {exc}") from None
    finally:
        conn.close()
