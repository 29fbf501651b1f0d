"""Structured logs: one line per event on stdout, `key=value` pairs (logfmt), for journald.

    level=warning logger=gateway.verify msg=rejected device=bin-0042 reason=bad_tag link=mqtt

Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<4>`), which journald
turns into the entry's priority, and carries no timestamp of its own (the journal stamps it); on a
terminal it starts with an ISO time instead. Values with spaces, quotes or `=` are quoted, newlines are
escaped, so an event never spans two lines, not even a traceback.

Fields travel as `log.info("msg", extra=fields(device=..., reason=...))`. Nothing here knows about keys:
callers never pass one (the registry's `Secret` prints as `<key>` should one slip through).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

_FIELDS = "kerbline_fields"
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def fields(**values: Any) -> dict[str, Any]:
    """The `extra=` argument that attaches `values` to a log call as key=value pairs."""
    return {_FIELDS: values}


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' "=\\\n\r\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """Formats a record as one logfmt line (see the module docstring)."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if self.journal:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        else:
            prefix = ""
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            parts.append(f"time={stamp}.{int(record.msecs):03d}")
        parts.append(f"level={record.levelname.lower()}")
        parts.append(f"logger={record.name}")
        parts.append(f"msg={_quote(record.getMessage())}")
        for key, value in getattr(record, _FIELDS, {}).items():
            if value is not None:
                parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return prefix + " ".join(parts)


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every gateway log line to `stream` (stdout) in logfmt, at `level` and above."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(LogfmtFormatter(journal="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # aiohttp's access log would write a line per scrape of /metrics; errors still come through.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
