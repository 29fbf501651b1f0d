"""Serial framing: each message travels as COBS(message + CRC-16 big-endian) followed by one 0x00.

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, unreflected, no final xor) is `binascii.crc_hqx` with
init 0xFFFF. COBS is the PyPI `cobs` package (C extension).

`FrameDecoder` is fed whatever the serial port returns. It splits at 0x00, so it resynchronises after
noise, a boot banner or half a frame at the next delimiter; it ignores empty frames (0x00 runs). Its
buffer never holds more than `MAX_FRAME` bytes: a longer run of non-zero bytes is reported once as
`too_large` and dropped up to the next 0x00.
"""
from __future__ import annotations

import binascii

from cobs import cobs  # type: ignore[import-untyped]  # no stubs; C extension

from gateway.wire.cose import MAX_MESSAGE
from gateway.wire.reasons import Reason, Rejected

CRC_LEN = 2
# The longest COBS encoding of MAX_MESSAGE + CRC_LEN bytes: one code byte per 254 data bytes, plus one.
MAX_FRAME = MAX_MESSAGE + CRC_LEN + (MAX_MESSAGE + CRC_LEN) // 254 + 1
DELIMITER = b"\x00"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data`."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(message: bytes) -> bytes:
    """The bytes to write to the port for `message`, delimiter included."""
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}")
    encoded: bytes = cobs.encode(message + crc16(message).to_bytes(CRC_LEN, "big"))
    return encoded + DELIMITER


def decode_frame(body: bytes) -> bytes:
    """The message in one frame body (the bytes between two delimiters), or Rejected."""
    if len(body) > MAX_FRAME:
        raise Rejected(Reason.TOO_LARGE, f"frame of {len(body)} bytes")
    try:
        raw: bytes = cobs.decode(body)
    except cobs.DecodeError as exc:
        raise Rejected(Reason.BAD_COBS, str(exc)) from None
    if len(raw) <= CRC_LEN:
        raise Rejected(Reason.BAD_CRC, "frame too short to hold a message and its CRC")
    message = raw[:-CRC_LEN]
    if len(message) > MAX_MESSAGE:
        raise Rejected(Reason.TOO_LARGE, f"message of {len(message)} bytes")
    if crc16(message) != int.from_bytes(raw[-CRC_LEN:], "big"):
        raise Rejected(Reason.BAD_CRC, "CRC mismatch")
    return message


class FrameDecoder:
    """Turns a serial byte stream into messages (bytes) and rejections (Rejected), in order."""

    def __init__(self) -> None:
        self._body = bytearray()
        self._dropping = False  # inside an over-long run, waiting for the next delimiter

    @property
    def pending(self) -> int:
        """Bytes held for the frame in progress (never more than MAX_FRAME)."""
        return len(self._body)

    def feed(self, data: bytes) -> list[bytes | Rejected]:
        """Everything completed by `data`: a message or a rejection per frame, empty frames skipped."""
        results: list[bytes | Rejected] = []
        view = memoryview(data)
        start = 0
        while True:
            end = data.find(0, start)
            if end < 0:
                self._extend(view[start:], results)
                return results
            if self._body or self._dropping or end - start > MAX_FRAME:
                self._extend(view[start:end], results)
                self._close(results)
            elif end > start:  # a whole frame inside `data`, the usual case: no copy into the buffer
                try:
                    results.append(decode_frame(data[start:end]))
                except Rejected as rejection:
                    results.append(rejection)
            start = end + 1

    def _extend(self, chunk: memoryview, results: list[bytes | Rejected]) -> None:
        if self._dropping or not chunk:
            return
        if len(self._body) + len(chunk) > MAX_FRAME:
            results.append(Rejected(Reason.TOO_LARGE, f"run of more than {MAX_FRAME} bytes without a delimiter"))
            self._body.clear()
            self._dropping = True
            return
        self._body += chunk

    def _close(self, results: list[bytes | Rejected]) -> None:
        if self._dropping:
            self._dropping = False
            return
        if not self._body:
            return
        body = bytes(self._body)
        self._body.clear()
        try:
            results.append(decode_frame(body))
        except Rejected as rejection:
            results.append(rejection)
