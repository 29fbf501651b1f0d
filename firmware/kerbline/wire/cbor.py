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

_MAX_TEXT = const(64)
MAX_DEPTH = const(4)

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


# ---------------------------------------------------------------- encoding

_MAX_ENCODED = const(1024)  # the contract's largest message


class Writer:
    """Encodes into one buffer allocated once, so building a message leaves no garbage but its result.

    Growing a bytearray piece by piece would reallocate it at every step and fragment a 64 KB heap.
    """

    def __init__(self, size=_MAX_ENCODED):
        self.buf = bytearray(size)
        self.pos = 0

    def reset(self):
        self.pos = 0
        return self

    def byte(self, value):
        if self.pos >= len(self.buf):
            raise ValueError("cbor: larger than the buffer")
        self.buf[self.pos] = value
        self.pos += 1

    def raw(self, data):
        end = self.pos + len(data)
        if end > len(self.buf):
            raise ValueError("cbor: larger than the buffer")
        self.buf[self.pos : end] = data
        self.pos = end

    def head(self, major, n):
        """The shortest head for major type `major` with argument `n`."""
        mt = major << 5
        if n < 24:
            self.byte(mt | n)
            return
        if n < 0x100:
            self.byte(mt | 24)
            width = 1
        elif n < 0x10000:
            self.byte(mt | 25)
            width = 2
        elif n < 0x100000000:
            self.byte(mt | 26)
            width = 4
        else:
            self.byte(mt | 27)
            width = 8
        for shift in range(8 * (width - 1), -1, -8):
            self.byte((n >> shift) & 0xFF)

    def float(self, x):
        """The narrowest IEEE width that holds `x` exactly (NaN as the canonical float16 NaN)."""
        if x != x:
            self.raw(b"\xf9\x7e\x00")
            return
        for fmt, lead in ((">e", 0xF9), (">f", 0xFA)):
            try:
                packed = struct.pack(fmt, x)
            except OverflowError:  # CPython refuses to round to infinity; MicroPython rounds silently
                continue
            if struct.unpack(fmt, packed)[0] == x:
                self.byte(lead)
                self.raw(packed)
                return
        self.byte(0xFB)
        self.raw(struct.pack(">d", x))

    def value(self, obj):
        """Append the deterministic encoding of `obj`."""
        if obj is False:
            self.byte(0xF4)
        elif obj is True:
            self.byte(0xF5)
        elif obj is None:
            self.byte(0xF6)
        elif isinstance(obj, int):
            if obj >= 0:
                self.head(_UINT, obj)
            else:
                self.head(_NINT, -1 - obj)
        elif isinstance(obj, float):
            self.float(obj)
        elif isinstance(obj, str):
            raw = obj.encode()
            self.head(_TEXT, len(raw))
            self.raw(raw)
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            self.head(_BYTES, len(obj))
            self.raw(obj)
        elif isinstance(obj, (list, tuple)):
            self.head(_ARRAY, len(obj))
            for item in obj:
                self.value(item)
        elif isinstance(obj, dict):
            # RFC 8949 4.2.1: keys in the bytewise order of their encodings
            self.head(_MAP, len(obj))
            pairs = []
            for key in obj:
                room = 9 + (len(key.encode()) if isinstance(key, str) else 0)  # head + text
                pairs.append((Writer(room).reset_value(key), obj[key]))
            pairs.sort(key=_first)
            for key_bytes, item in pairs:
                self.raw(key_bytes)
                self.value(item)
        elif isinstance(obj, Tag):
            self.head(_TAG, obj.tag)
            self.value(obj.value)
        else:
            raise TypeError("cbor: cannot encode %s" % type(obj))

    def reset_value(self, obj):
        """Encode `obj` alone and return its bytes (the one allocation a message costs)."""
        self.pos = 0
        self.value(obj)
        return self.getvalue()

    def getvalue(self):
        return bytes(memoryview(self.buf)[: self.pos])


def _first(pair):
    return pair[0]


_shared = None


def writer():
    """The module's one reusable writer, reset; whoever takes it copies its result out before the next."""
    global _shared
    if _shared is None:
        _shared = Writer()
    return _shared.reset()


def dumps(obj):
    """The deterministic CBOR encoding of `obj` as bytes."""
    return writer().reset_value(obj)


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
            if n > _MAX_TEXT:
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
