"""The closed set of reasons for refusing a message, word for word the firmware's `kerbline.wire.reject`.

A reason becomes a counter label and a log field, so the set is an enum that cannot grow by accident.
The order in which checks run (and so which reason a message with several faults gets) is in
docs/architecture.md.
"""
from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why a message was refused; the value is the label used on counters and in logs."""

    TOO_LARGE = "too_large"
    BAD_COBS = "bad_cobs"
    BAD_CRC = "bad_crc"
    BAD_CBOR = "bad_cbor"
    TOO_DEEP = "too_deep"
    BAD_COSE = "bad_cose"
    UNKNOWN_DEVICE = "unknown_device"
    KID_MISMATCH = "kid_mismatch"
    BAD_TAG = "bad_tag"
    BAD_VERSION = "bad_version"
    BAD_REPORT = "bad_report"
    BAD_COMMAND = "bad_command"
    DUPLICATE = "duplicate"
    REPLAY = "replay"


class Rejected(Exception):
    """A message refused for `reason`; `detail` is a short human hint for the log.

    The detail never carries key material or message bytes, so a Rejected can be logged as is.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)
