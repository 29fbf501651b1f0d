"""Step 2 of the pipeline: verify every message, count and quarantine refusals, dedup via the spool."""
from gateway.verify.quarantine import Quarantine, Quarantined
from gateway.verify.rejections import RejectionLog
from gateway.verify.verifier import Observer, Received, Verifier

__all__ = ["Observer", "Quarantine", "Quarantined", "Received", "RejectionLog", "Verifier"]
