"""Serial framing: COBS(message + CRC-16 big-endian) followed by one 0x00.

`Deframer` splits a byte stream at 0x00 with one preallocated buffer, so noise, boot banners or a
half frame after a reconnect cost nothing but a counted rejection: a run longer than the largest legal
frame is dropped as `too_large` and the reader resynchronises at the next 0x00.
"""
import struct

from kerbline.compat import const
from kerbline.wire import cobs
from kerbline.wire.crc16 import crc16
from kerbline.wire.reject import BAD_CRC, TOO_LARGE, Reject

MAX_MESSAGE = const(1024)
_CRC_LEN = const(2)
MAX_FRAME = const(1031)  # cobs.max_encoded_len(MAX_MESSAGE + _CRC_LEN) = 1026 + 4 + 1


def encode(message):
    """The frame bytes for `message`, delimiter included: one working buffer, one result."""
    if len(message) > MAX_MESSAGE:
        raise ValueError("message too large")
    crc = crc16(message)
    out = bytearray(cobs.max_encoded_len(len(message) + _CRC_LEN) + 1)
    end = cobs.encode_into(out, message, bytes((crc >> 8, crc & 0xFF)))
    # out[end] is already 0x00: the delimiter
    return bytes(memoryview(out)[: end + 1])


def decode(body):
    """The message inside one frame body (delimiter already removed), or Reject."""
    if len(body) > MAX_FRAME:
        raise Reject(TOO_LARGE)
    raw = cobs.decode(body)
    if len(raw) <= _CRC_LEN:
        raise Reject(BAD_CRC)
    message = raw[:-_CRC_LEN]
    if len(message) > MAX_MESSAGE:
        raise Reject(TOO_LARGE)
    if crc16(message) != struct.unpack(">H", raw[-_CRC_LEN:])[0]:
        raise Reject(BAD_CRC)
    return message


class Deframer:
    """Feed it bytes as they arrive; it calls `on_message(msg)` or `on_reject(reason)` per frame."""

    def __init__(self, on_message, on_reject):
        self._buf = bytearray(MAX_FRAME)
        self._len = 0
        self._overflow = False
        self.on_message = on_message
        self.on_reject = on_reject

    def feed(self, data):
        buf = self._buf
        for byte in data:
            if byte:
                if self._len < MAX_FRAME:
                    buf[self._len] = byte
                    self._len += 1
                else:
                    self._overflow = True
                continue
            if self._overflow:
                self.on_reject(TOO_LARGE)
            elif self._len:
                self._deliver(memoryview(buf)[: self._len])
            self._len = 0
            self._overflow = False

    def _deliver(self, body):
        try:
            message = decode(body)
        except Reject as e:
            self.on_reject(e.args[0])
            return
        self.on_message(message)
