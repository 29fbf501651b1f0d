"""The closed set of reasons for refusing a message, shared word for word with the gateway.

A receiver checks a message in a fixed order (docs/architecture.md) and the first failing check names
the reason; the reason becomes a counter label, so the set stays small and never grows by accident.
"""

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


class Reject(Exception):
    """A message refused for `reason` (one of the names above); `args[0]` is the reason."""

    @property
    def reason(self):
        return self.args[0]
