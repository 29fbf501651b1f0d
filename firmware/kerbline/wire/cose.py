"""COSE_Mac0 (RFC 9052, alg 4 = HMAC 256/64) around every Kerbline message, both directions.

protected = bstr of {1: 4, 4: kid}, kid = the device id in UTF-8; unprotected = {};
tag = the first 8 bytes of HMAC-SHA256(key, CBOR(["MAC0", protected, h'', payload])).
The MAC is checked, in constant time, before the payload is decoded.
"""
from kerbline.compat import const
from kerbline.wire import cbor
from kerbline.wire.hmac256 import HmacKey, equal
from kerbline.wire.reject import BAD_COSE, BAD_TAG, KID_MISMATCH, UNKNOWN_DEVICE, Reject

_ALG_HMAC_256_64 = const(4)
_TAG_LEN = const(8)
_MAX_ID = const(32)
_COSE_MAC0 = const(17)
_HEADER_ALG = const(1)
_HEADER_KID = const(4)
_MAC0_CONTEXT = b"\x84\x64MAC0"  # array(4), text(4) "MAC0": the fixed start of the MAC structure
_EMPTY_BSTR = b"\x40"
_ENVELOPE_START = b"\xd1\x84"  # tag 17, array(4)
_EMPTY_MAP = b"\xa0"
_TAG_HEAD = b"\x48"  # bstr(8)


def valid_device_id(kid):
    """1 to 32 bytes of [a-z0-9-] (bytes or str)."""
    if isinstance(kid, str):
        kid = kid.encode()
    if not 1 <= len(kid) <= _MAX_ID:
        return False
    for c in kid:
        if not (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c == 0x2D):
            return False
    return True


def protected_header(device_id):
    """The protected header bytes for `device_id` (deterministic CBOR of {1: 4, 4: kid})."""
    return cbor.dumps({_HEADER_ALG: _ALG_HMAC_256_64, _HEADER_KID: device_id.encode()})


def _bstr_head(n):
    """The CBOR head of a byte string of `n` bytes (a message is at most 1024 bytes)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    return bytes((0x59, n >> 8, n & 0xFF))


def mac(hmac_key, protected, payload):
    """The 8-byte tag, fed piece by piece so the MAC structure is never built in RAM."""
    full = hmac_key.digest(_MAC0_CONTEXT, _bstr_head(len(protected)), protected, _EMPTY_BSTR,
                           _bstr_head(len(payload)), payload)
    return full[:_TAG_LEN]


def parse(message):
    """Split a COSE_Mac0 message into (kid str, protected, payload, tag), or Reject(bad_cose/...)."""
    envelope = cbor.loads(message, outer_tag=True)
    if not isinstance(envelope, cbor.Tag) or envelope.tag != _COSE_MAC0:
        raise Reject(BAD_COSE)
    parts = envelope.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise Reject(BAD_COSE)
    protected, unprotected, payload, tag = parts
    if not isinstance(protected, bytes) or not isinstance(unprotected, dict):
        raise Reject(BAD_COSE)
    if not isinstance(payload, bytes) or not isinstance(tag, bytes) or len(tag) != _TAG_LEN:
        raise Reject(BAD_COSE)
    header = cbor.loads(protected)
    if not isinstance(header, dict) or len(header) != 2:
        raise Reject(BAD_COSE)
    kid = header.get(_HEADER_KID)
    alg = header.get(_HEADER_ALG)
    if alg != _ALG_HMAC_256_64 or isinstance(alg, bool) or not isinstance(kid, bytes):
        raise Reject(BAD_COSE)
    if not valid_device_id(kid):
        raise Reject(BAD_COSE)
    return kid.decode(), protected, payload, tag


def verify(message, key_for, expected_device=None):
    """Check `message` and return (device_id, payload).

    `key_for(device_id)` gives an `HmacKey` or None (unknown device); `expected_device` is the device
    named by the MQTT topic, or the device itself when it receives a command.
    """
    device_id, protected, payload, tag = parse(message)
    if expected_device is not None and device_id != expected_device:
        raise Reject(KID_MISMATCH)
    hmac_key = key_for(device_id)
    if hmac_key is None:
        raise Reject(UNKNOWN_DEVICE)
    if not equal(mac(hmac_key, protected, payload), tag):
        raise Reject(BAD_TAG)
    return device_id, payload


class Sealer:
    """One device's sending side: its protected header and key, prepared once at boot."""

    def __init__(self, device_id, key):
        if not valid_device_id(device_id):
            raise ValueError("bad device id")
        self.device_id = device_id
        self.hmac_key = HmacKey(key)
        self.protected = protected_header(device_id)

    def __repr__(self):
        return "<Sealer %s>" % self.device_id

    def seal(self, payload):
        """The COSE_Mac0 message carrying `payload`."""
        protected = self.protected
        tag = mac(self.hmac_key, protected, payload)
        w = cbor.writer()
        w.raw(_ENVELOPE_START)
        w.raw(_bstr_head(len(protected)))
        w.raw(protected)
        w.raw(_EMPTY_MAP)
        w.raw(_bstr_head(len(payload)))
        w.raw(payload)
        w.raw(_TAG_HEAD)
        w.raw(tag)
        return w.getvalue()

    def open(self, message):
        """Verify a message addressed to this device (a command) and return its payload."""
        return verify(message, self._own_key, self.device_id)[1]

    def _own_key(self, device_id):
        return self.hmac_key
