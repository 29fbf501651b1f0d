"""Consistent Overhead Byte Stuffing: removes every 0x00 from a message so 0x00 can end a frame.

Overhead is one byte per 254 data bytes plus one, so a 1026-byte message+CRC fits in 1032 bytes.
Encoding follows the original paper: a run of 254 non-zero bytes gets a 0xFF code and no implied zero,
and no empty block is appended after a final full run.
"""
from kerbline.compat import const
from kerbline.wire.reject import BAD_COBS, Reject

_FULL = const(0xFF)


def max_encoded_len(n):
    """Largest COBS encoding of an `n`-byte input (without the 0x00 delimiter)."""
    return n + n // 254 + 1


def encode_into(out, data, tail=b""):
    """COBS-encode `data` then `tail` into the bytearray `out` (at least `max_encoded_len` long).

    Returns the encoded length. `tail` lets a caller stuff a CRC after a message without joining them.
    """
    n = len(data)
    total = n + len(tail)
    code_at = 0
    o = 1
    code = 1
    for i in range(total):
        byte = data[i] if i < n else tail[i - n]
        if byte:
            out[o] = byte
            o += 1
            code += 1
            if code == _FULL and i + 1 < total:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
        else:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
    out[code_at] = code
    return o


def encode(data):
    """COBS-encode `data` (bytes-like) and return bytes without the trailing 0x00."""
    out = bytearray(max_encoded_len(len(data)))
    return bytes(memoryview(out)[: encode_into(out, data)])


def decode(data):
    """Decode one COBS block (no 0x00 delimiter) or raise Reject(bad_cobs)."""
    n = len(data)
    out = bytearray(n)
    o = 0
    i = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise Reject(BAD_COBS)
        end = i + code
        if end > n:
            raise Reject(BAD_COBS)
        i += 1
        while i < end:
            byte = data[i]
            if byte == 0:
                raise Reject(BAD_COBS)
            out[o] = byte
            o += 1
            i += 1
        if code != _FULL and i < n:
            out[o] = 0
            o += 1
    return bytes(memoryview(out)[:o])
