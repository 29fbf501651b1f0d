"""A small CBOR (RFC 8949) codec for what the Kerbline contract uses, with its limits built in.

Encoding is deterministic (section 4.2): shortest heads, map keys sorted by their encoded bytes,
floats in the shortest width that holds the value exactly. Types: int, str, bytes, list/tuple, dict,
bool, None, float, and `Tag` (only tag 17, COSE_Mac0, is ever used).

Decoding refuses, with a Reject reason and without allocating for a declared length it has not seen:
indefinite lengths, reserved or unassigned simple values, duplicate map keys, a
declared length beyond the input, trailing bytes (all `bad_cbor`); nesting deeper than `max_depth`
(`too_deep`, counted like cbor2: each array, map and tag is a level); text longer than 64 bytes
(`too_large`).
"""
import struct

from kerbline.compat import const
from kerbline.wire.reject import BAD_CBOR, TOO_DEEP, TOO_LARGE, Reject

MAX_TEXT = const(64)
MAX_DEPTH = const(4)
COSE_MAC0_TAG = const(17)

_UINT = const(0)
_NINT = const(1)
_BYTES = const(2)
_TEXT = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)


class Tag:
    """A tagged item; the contract uses only tag 17 around a COSE_Mac0 array."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value


# ---------------------------------------------------------------- encoding


def head(major, n):
    """The shortest head for major type `major` with argument `n` (also used to stream MAC input)."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return struct.pack(">BH", mt | 25, n)
    if n < 0x100000000:
        return struct.pack(">BI", mt | 26, n)
    return struct.pack(">BQ", mt | 27, n)


def _float(out, x):
    if x != x:
        out.extend(b"\xf9\x7e\x00")
        return
    for fmt, lead in ((">e", 0xF9), (">f", 0xFA)):
        try:
            packed = struct.pack(fmt, x)
        except OverflowError:  # CPython refuses to round to infinity; MicroPython rounds silently
            continue
        if struct.unpack(fmt, packed)[0] == x:
            out.append(lead)
            out.extend(packed)
            return
    out.append(0xFB)
    out.extend(struct.pack(">d", x))


def encode_into(out, obj):
    """Append the deterministic encoding of `obj` to the bytearray `out`."""
    if obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            out.extend(head(_UINT, obj))
        else:
            out.extend(head(_NINT, -1 - obj))
    elif isinstance(obj, float):
        _float(out, obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        out.extend(head(_TEXT, len(raw)))
        out.extend(raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.extend(head(_BYTES, len(obj)))
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        out.extend(head(_ARRAY, len(obj)))
        for item in obj:
            encode_into(out, item)
    elif isinstance(obj, dict):
        out.extend(head(_MAP, len(obj)))
        pairs = []
        for key in obj:
            pairs.append((dumps(key), obj[key]))
        pairs.sort(key=_first)
        for key_bytes, value in pairs:
            out.extend(key_bytes)
            encode_into(out, value)
    elif isinstance(obj, Tag):
        out.extend(head(_TAG, obj.tag))
        encode_into(out, obj.value)
    else:
        raise TypeError("cbor: cannot encode %s" % type(obj))


def _first(pair):
    return pair[0]


def dumps(obj):
    """The deterministic CBOR encoding of `obj` as bytes."""
    out = bytearray()
    encode_into(out, obj)
    return bytes(out)


# ---------------------------------------------------------------- decoding


class _Decoder:
    def __init__(self, data, max_depth, outer_tag):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.outer_tag = outer_tag

    def _take(self, n):
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise Reject(BAD_CBOR)
        self.pos = end
        return self.data[start:end]

    def _argument(self, info):
        if info < 24:
            return info
        if info == 24:
            return self._take(1)[0]
        if info == 25:
            return struct.unpack(">H", self._take(2))[0]
        if info == 26:
            return struct.unpack(">I", self._take(4))[0]
        if info == 27:
            return struct.unpack(">Q", self._take(8))[0]
        raise Reject(BAD_CBOR)  # 28..30 reserved, 31 indefinite length: refused

    def item(self, depth):
        initial = self._take(1)[0]
        major = initial >> 5
        info = initial & 0x1F
        if major == _SIMPLE:
            return self._simple(info)
        n = self._argument(info)
        if major == _UINT:
            return n
        if major == _NINT:
            return -1 - n
        if major == _BYTES:
            return bytes(self._take(n))
        if major == _TEXT:
            if n > MAX_TEXT:
                raise Reject(TOO_LARGE)
            try:
                return str(bytes(self._take(n)), "utf-8")
            except UnicodeError:
                raise Reject(BAD_CBOR)
        if depth >= self.max_depth:
            raise Reject(TOO_DEEP)
        depth += 1
        # Every item takes at least one byte: a count beyond the remaining input is a lie, refused
        # before anything is allocated for it.
        if n > len(self.data) - self.pos:
            raise Reject(BAD_CBOR)
        if major == _ARRAY:
            items = []
            for _ in range(n):
                items.append(self.item(depth))
            return items
        if major == _MAP:
            result = {}
            for _ in range(n):
                key = self.item(depth)
                if isinstance(key, bool) or not isinstance(key, (int, str)) or key in result:
                    raise Reject(BAD_CBOR)
                result[key] = self.item(depth)
            return result
        if depth != 1 or not self.outer_tag:
            raise Reject(BAD_CBOR)
        return Tag(n, self.item(depth))

    def _simple(self, info):
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25:
            return struct.unpack(">e", self._take(2))[0]
        if info == 26:
            return struct.unpack(">f", self._take(4))[0]
        if info == 27:
            return struct.unpack(">d", self._take(8))[0]
        raise Reject(BAD_CBOR)  # undefined, other simple values, break


def loads(data, max_depth=MAX_DEPTH, outer_tag=False):
    """Decode exactly one CBOR item filling all of `data`, within the contract's limits.

    Tags are refused (`bad_cbor`) except, with `outer_tag`, one around the whole item: the COSE
    envelope's. Which tag it is, is the caller's check, so a wrong one is named `bad_cose`.
    """
    decoder = _Decoder(memoryview(data), max_depth, outer_tag)
    value = decoder.item(0)
    if decoder.pos != len(data):
        raise Reject(BAD_CBOR)
    return value
