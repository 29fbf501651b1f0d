"""HMAC-SHA256 (RFC 2104) on `hashlib.sha256` alone.

MicroPython's hash objects have no `copy()`, so the padded inner and outer key blocks are computed once
per key and each MAC starts two fresh hashes from them. The message is fed in pieces, so the COSE MAC
structure never needs to be assembled in RAM.
"""
import hashlib

from kerbline.compat import const

_BLOCK = const(64)


class HmacKey:
    """A key ready for many MACs; never printable, so it cannot end up in a log by accident."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        inner = bytearray(_BLOCK)
        outer = bytearray(_BLOCK)
        for i in range(_BLOCK):
            byte = key[i] if i < len(key) else 0
            inner[i] = byte ^ 0x36
            outer[i] = byte ^ 0x5C
        self._inner = bytes(inner)
        self._outer = bytes(outer)

    def __repr__(self):
        return "<HmacKey>"

    def digest(self, *pieces):
        """HMAC-SHA256 over the concatenation of `pieces` (each bytes-like)."""
        h = hashlib.sha256(self._inner)
        for piece in pieces:
            h.update(piece)
        inner = h.digest()
        h = hashlib.sha256(self._outer)
        h.update(inner)
        return h.digest()


def equal(a, b):
    """Constant-time comparison: the time does not depend on where the first difference is."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
