"""COSE_Mac0 (RFC 9052, alg 4 = HMAC 256/64): the envelope of every Kerbline message, both directions.

protected = bstr of {1: 4, 4: kid}, kid = the device id in UTF-8; unprotected = a map (sent empty);
payload = bstr; tag = the first 8 bytes of HMAC-SHA256(key, CBOR(["MAC0", protected, h'', payload])).

`verify` runs the documented checks in order (size, envelope CBOR, envelope shape, kid vs topic,
registry, MAC) and never decodes the payload: that happens only once the MAC is known good. The MAC is
compared in constant time. Keys only ever pass through `hmac`; no message or detail mentions them.

Hot path: a message laid out the way devices send it (tag 17, a 4-array of bstr, empty map, bstr,
8-byte bstr, nothing after) is taken apart by hand, giving exactly what the decoder would give; any
other layout goes through the decoder and its checks. The MAC structure is assembled the same way.
"""
from __future__ import annotations

import functools
import hmac
from collections.abc import Callable

import cbor2

from gateway.wire.cbor_limits import MAX_DEPTH, decode
from gateway.wire.identity import device_id_from_kid, is_device_id
from gateway.wire.reasons import Reason, Rejected

MAX_MESSAGE = 1024
COSE_MAC0_TAG = 17
ALG_HMAC_256_64 = 4
TAG_LEN = 8
_HEADER_ALG = 1
_HEADER_KID = 4
# Protected headers seen from registered devices repeat byte for byte; remembering their meaning saves
# a decode per message. Bounded, so a flood of distinct headers costs at most this many entries.
_PROTECTED_CACHE = 16384

KeyLookup = Callable[[str], bytes | None]


def verify(message: bytes, lookup_key: KeyLookup, expected_device: str | None = None) -> tuple[str, bytes]:
    """Check `message` and return (device id, payload bytes), or raise Rejected.

    `lookup_key(device_id)` returns the device's 32-byte key, or None when it is not registered.
    `expected_device` is the device named by the MQTT topic (None on the serial link, where the kid
    alone names the sender).
    """
    if len(message) > MAX_MESSAGE:
        raise Rejected(Reason.TOO_LARGE, f"message of {len(message)} bytes")
    protected, payload, tag = _open_envelope(message)
    device_id = _device_of(protected)
    if expected_device is not None and expected_device != device_id:
        raise Rejected(Reason.KID_MISMATCH, "kid is not the topic's device")
    key = lookup_key(device_id)
    if key is None:
        raise Rejected(Reason.UNKNOWN_DEVICE, f"kid {device_id} is not registered")
    if not hmac.compare_digest(_mac(key, protected, payload), tag):
        raise Rejected(Reason.BAD_TAG, f"MAC check failed for {device_id}")
    return device_id, payload


def build(device_id: str, key: bytes, payload: bytes) -> bytes:
    """The COSE_Mac0 message carrying `payload` for (or from) `device_id`, in the devices' layout:
    tag 17, [protected, {}, payload, tag], every head in its shortest form (assembled by hand like the
    MAC structure: the serial link seals an `ack` for every read)."""
    protected = _protected_for(device_id)
    message = b"".join((_MESSAGE_HEAD, _bstr_head(len(protected)), protected, b"\xa0", _bstr_head(len(payload)),
                        payload, _TAG_HEAD, _mac(key, protected, payload)))
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}")
    return message


def _mac(key: bytes, protected: bytes, payload: bytes) -> bytes:
    """The tag over the MAC structure ["MAC0", protected, h'', payload], in CBOR's shortest form."""
    data = b"".join((_MAC0_HEAD, _bstr_head(len(protected)), protected, b"\x40", _bstr_head(len(payload)), payload))
    # The one-shot hmac.digest releases the GIL on every call (CPython 3.11), however short the message.
    # That costs thread switches (hmac.new, which keeps the GIL, measured 0.5 to 1 point of a core better
    # on the serial line-rate bench), but it is also where the spool's thread gets the GIL while MQTT
    # ingest keeps the event loop busy: with hmac.new the committer fell behind at saturation and its
    # backlog (bounded by spool.max_pending) took the gateway's RSS from about 105 to 163-202 MB
    # (bench/gateway_e2e.py --quick). Keep it until the committer needs the GIL less often.
    return hmac.digest(key, data, "sha256")[:TAG_LEN]


_MAC0_HEAD = b"\x84\x64MAC0"  # array(4), text(4) "MAC0"
_MESSAGE_HEAD = bytes((0xC0 | COSE_MAC0_TAG, 0x84))  # tag(17), array(4)
_TAG_HEAD = bytes((0x40 | TAG_LEN,))  # bstr(8)


def _bstr_head(n: int) -> bytes:
    """The shortest CBOR head of a byte string of `n` bytes."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


def _bstr_at(message: bytes, pos: int) -> tuple[int, int]:
    """(start, end) of the byte string whose head is at `pos` (1-, 2- or 3-byte heads), else (0, -1)."""
    head = message[pos]
    if 0x40 <= head < 0x58:
        start = pos + 1
        return start, start + head - 0x40
    if head == 0x58 and pos + 1 < len(message):
        start = pos + 2
        return start, start + message[pos + 1]
    if head == 0x59 and pos + 2 < len(message):
        start = pos + 3
        return start, start + ((message[pos + 1] << 8) | message[pos + 2])
    return 0, -1


def _usual_envelope(message: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(protected, payload, tag) of a message in the devices' layout, None for any other layout."""
    if message[:2] != b"\xd1\x84" or len(message) < 14:
        return None
    p_start, p_end = _bstr_at(message, 2)
    if p_end < 0 or p_end + 12 > len(message) or message[p_end] != 0xA0:
        return None
    b_start, b_end = _bstr_at(message, p_end + 1)
    if b_end < 0 or b_end + 9 != len(message) or message[b_end] != 0x48:
        return None
    return message[p_start:p_end], message[b_start:b_end], message[b_end + 1:]


def _outer_tag(message: bytes) -> tuple[int | None, int]:
    """(tag number, offset of the tagged item) when `message` starts with a well-formed tag head.

    Taking the tag off by hand lets the decoder refuse every tag inside, while a wrong outer tag is
    still an envelope shape error (`bad_cose`) rather than a decoding one.
    """
    if not message or message[0] >> 5 != 6:
        return None, 0
    info = message[0] & 0x1F
    if info < 24:
        return info, 1
    if info > 27:
        return None, 0  # reserved or indefinite: left for the decoder to refuse as bad_cbor
    size = 1 << (info - 24)
    if len(message) < 1 + size:
        return None, 0
    return int.from_bytes(message[1 : 1 + size], "big"), 1 + size


def _open_envelope(message: bytes) -> tuple[bytes, bytes, bytes]:
    """(protected, payload, tag) of a COSE_Mac0 message: stages 3 and 4 (bad_cbor, too_deep, bad_cose)."""
    usual = _usual_envelope(message)
    if usual is not None:
        return usual
    number, offset = _outer_tag(message)
    body = decode(message[offset:] if offset else message, MAX_DEPTH - 1 if offset else MAX_DEPTH)
    if number != COSE_MAC0_TAG:
        raise Rejected(Reason.BAD_COSE, "not tagged 17 (COSE_Mac0)")
    if type(body) is not list or len(body) != 4:
        raise Rejected(Reason.BAD_COSE, "COSE_Mac0 is not a 4-element array")
    protected, unprotected, payload, tag = body
    if type(protected) is not bytes or type(unprotected) is not dict or type(payload) is not bytes:
        raise Rejected(Reason.BAD_COSE, "protected, unprotected or payload of the wrong type")
    if type(tag) is not bytes or len(tag) != TAG_LEN:
        raise Rejected(Reason.BAD_COSE, f"MAC tag is not a {TAG_LEN}-byte string")
    return protected, payload, tag


@functools.lru_cache(maxsize=_PROTECTED_CACHE)
def _device_of(protected: bytes) -> str:
    """The device id in a protected header {1: 4, 4: kid}; decoding errors keep their own reason."""
    header = decode(protected)
    if type(header) is not dict or len(header) != 2:
        raise Rejected(Reason.BAD_COSE, "protected header is not {1: alg, 4: kid}")
    alg = header.get(_HEADER_ALG)
    if type(alg) is not int or alg != ALG_HMAC_256_64:
        raise Rejected(Reason.BAD_COSE, "alg is not 4 (HMAC 256/64)")
    kid = header.get(_HEADER_KID)
    device_id = device_id_from_kid(kid) if type(kid) is bytes else None
    if device_id is None:
        raise Rejected(Reason.BAD_COSE, "kid missing or not a device id")
    return device_id


@functools.lru_cache(maxsize=_PROTECTED_CACHE)
def _protected_for(device_id: str) -> bytes:
    if not is_device_id(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    return cbor2.dumps({_HEADER_ALG: ALG_HMAC_256_64, _HEADER_KID: device_id.encode()}, canonical=True)
