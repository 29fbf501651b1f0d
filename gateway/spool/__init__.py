"""Step 3 of the pipeline: the durable spool (SQLite WAL, synchronous=FULL, group commit).

Ingest calls `Spool.submit` and acknowledges a report only after it returns STORED or DUPLICATE; the
batcher reads committed reports after each sink's cursor and moves the cursor when the sink has them.
A report leaves the spool when every sink has it. See docs/gateway.md, section "Spool".
"""
from gateway.spool.committer import SpoolError
from gateway.spool.config import SpoolConfig
from gateway.spool.health import Health
from gateway.spool.records import StoredReport, SubmitResult
from gateway.spool.spool import GATEWAY_BOOT, Spool, SpoolStats, Submission
from gateway.spool.reads import ReadMode, ReadResult
from gateway.spool.store import Cursor, DeadLetter

__all__ = ["Cursor", "DeadLetter", "GATEWAY_BOOT", "Health", "ReadMode", "ReadResult", "Spool", "SpoolConfig",
           "SpoolError", "SpoolStats", "StoredReport", "Submission", "SubmitResult"]
