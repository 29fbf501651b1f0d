"""The spool database: tables, and how a connection is opened.

WAL with `synchronous=FULL` makes every COMMIT fsync the write-ahead log, so a committed transaction
survives a power cut; WAL also lets the one writer append without rewriting pages in place. Reports get
explicit ids from a persisted high-water mark (`meta.last_id`), never reused even when the table empties,
because sink cursors and idempotency keys are ids. A report's time is kept in integer microseconds:
SQLite's JSON functions, which the batcher's reads go through, print REALs with 15 digits only.
"""
from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    arrival_ns INTEGER NOT NULL,
    time_us INTEGER NOT NULL,
    time_estimated INTEGER NOT NULL,
    uptime INTEGER,
    is_alarm INTEGER NOT NULL,
    n INTEGER NOT NULL,
    readings TEXT NOT NULL,
    raw BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    contiguous INTEGER NOT NULL,
    above BLOB NOT NULL,
    PRIMARY KEY (device, boot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_floor (
    device TEXT PRIMARY KEY,
    floor INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL,
    inflight_first INTEGER,
    inflight_last INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL
);
"""


class SchemaError(RuntimeError):
    """The database was written by an incompatible version of the gateway."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the spool database for the calling thread, schema in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    # Checkpoints copy the WAL back into the database; every ~4 MB keeps the WAL file small.
    conn.execute("PRAGMA wal_autocheckpoint=1000")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.executescript(_TABLES)
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None:
        # `instance` tells this spool's batches from another gateway's (it is part of every batch key).
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema', ?), ('last_id', 0), ('instance', ?)",
                     (SCHEMA_VERSION, secrets.randbits(62)))
    elif row[0] != SCHEMA_VERSION:
        conn.close()
        raise SchemaError(f"spool {path} has schema {row[0]}, this gateway needs {SCHEMA_VERSION}")
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode != "wal":
        conn.close()
        raise SchemaError(f"spool {path}: the filesystem refused WAL mode (got {mode!r})")
    return conn
