"""CBOR decoding held to the contract's limits, on top of cbor2 6.x.

One profile for everything a Kerbline receiver decodes (the COSE array, its protected header, report and
command payloads), the same subset the firmware's decoder accepts:
- exactly one well-formed item, nothing after it; definite lengths only; no duplicate map keys;
  strict UTF-8 (`bad_cbor`);
- no tags at all: the envelope's outer tag 17 is taken off by the caller before decoding (`bad_cbor`);
- map keys are integers or text; simple values only false, true and null (`bad_cbor`);
- nesting at most `MAX_DEPTH` levels, each array, map and tag one level, as cbor2's `max_depth`
  counts them (`too_deep`);
- text at most `MAX_TEXT` bytes of UTF-8, keys included (`too_large`).

Why the tag rule is enforced here and not left to shape checks: cbor2 turns some tags into Python
objects (epoch and string datetimes, bignums, decimals, sets, IP addresses, and the shared references
28/29 that can build cyclic structures). Every one of its built-in tag decoders is replaced by a refusal
and any other tag is refused through `tag_hook`, so no tag is ever interpreted. A test probes all tag
numbers up to 65535 so a cbor2 upgrade that adds a built-in decoder cannot slip through.

Cost: this is the gateway's hot path (every report is decoded twice over: envelope and payload). One
decoder per depth and thread is made once and given a new stream per item (making one costs as much as
decoding a report). `decode(..., check=False)` leaves the profile walk to a caller that checks every
value anyway (the report parser) and calls `check_profile` itself whenever it is not sure.

Resource bounds: callers cap the input at 1024 bytes first; cbor2 refuses nesting past `max_depth`
without recursing further and reads a declared length in bounded chunks, so a 1 GB length in a short
input fails with an end-of-data error instead of an allocation (tests/gateway/test_wire_limits.py).
"""
from __future__ import annotations

import io
import threading
from typing import Any, NoReturn

import cbor2

from gateway.wire.reasons import Reason, Rejected

MAX_DEPTH = 4
MAX_TEXT = 64
# A str of at most this many characters cannot exceed MAX_TEXT bytes (UTF-8 uses at most 4 per char).
_SHORT_TEXT = MAX_TEXT // 4

# The tag numbers cbor2 6.x decodes by itself (found by probing every tag up to 65535; the test that
# did it keeps running).
CBOR2_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                       1004, 43000, 55799)  # fmt: skip


class _TagRefused(Exception):
    """Raised from inside cbor2 when it meets any tag; cbor2 wraps it in a CBORDecodeError."""


def _refuse_tag(*_: object) -> NoReturn:
    raise _TagRefused


_DECODER_OPTIONS: dict[str, Any] = {
    "tag_hook": _refuse_tag,
    "semantic_decoders": {number: _refuse_tag for number in CBOR2_SEMANTIC_TAGS},
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
    "str_errors": "strict",
}
_PLAIN_TYPES = frozenset({int, float, bool, bytes, type(None)})


class _Decoders(threading.local):
    """A configured decoder per depth limit, per thread (a decoder holds its stream while it decodes)."""

    def __init__(self) -> None:
        self.by_depth: dict[int, cbor2.CBORDecoder] = {}

    def get(self, max_depth: int) -> cbor2.CBORDecoder:
        decoder = self.by_depth.get(max_depth)
        if decoder is None:
            decoder = cbor2.CBORDecoder(io.BytesIO(b""), max_depth=max_depth, **_DECODER_OPTIONS)
            self.by_depth[max_depth] = decoder
        return decoder


_decoders = _Decoders()


def decode(data: bytes, max_depth: int = MAX_DEPTH, check: bool = True) -> Any:
    """The one CBOR item that fills `data`, or Rejected(bad_cbor | too_deep | too_large).

    `max_depth` is lowered by the caller when it has already taken off an enclosing tag. With
    `check=False` the profile walk (text length, key types, simple values) is the caller's: it must
    call `check_profile(item)` before it accepts the item or refuses it for any reason of its own.
    """
    decoder = _decoders.by_depth.get(max_depth) or _decoders.get(max_depth)
    stream = io.BytesIO(data)
    # Every item gets its own stream, and a new stream starts the decoder afresh (cbor2 reads exactly
    # the item's bytes, so nothing of the last item is left buffered), so the stream is not taken back
    # afterwards: that was a third of this function's own cost.
    decoder.fp = stream
    try:
        item = decoder.decode()
    except cbor2.CBORDecodeError as exc:
        raise _rejection(exc) from None
    if stream.tell() != len(data):
        raise Rejected(Reason.BAD_CBOR, "bytes after the CBOR item")
    if check:
        check_profile(item)
    return item


# cbor2 error texts -> a fixed detail: the texts quote the offending data (a duplicate key, say), which
# is the sender's to choose and does not belong in a log line.
_CBOR2_ERRORS = (
    ("premature end of stream", "truncated item"),
    ("Duplicate map key", "duplicate map key"),
    ("indefinite length", "indefinite length"),
    ("decoding text string", "invalid UTF-8"),
)


def _rejection(exc: cbor2.CBORDecodeError) -> Rejected:
    message = str(exc)
    if isinstance(exc.__cause__, _TagRefused):
        return Rejected(Reason.BAD_CBOR, "tag inside the item")
    # cbor2 signals depth with this text only; the vector and limit tests pin it, so an upgrade that
    # rewords it fails loudly instead of turning too_deep into bad_cbor.
    if "maximum container nesting depth" in message:
        return Rejected(Reason.TOO_DEEP, "nesting deeper than the limit")
    for needle, detail in _CBOR2_ERRORS:
        if needle in message:
            return Rejected(Reason.BAD_CBOR, detail)
    return Rejected(Reason.BAD_CBOR, "malformed CBOR")


def check_profile(item: Any) -> None:
    """Text length, key types and simple values, which cbor2 has no option for, in one flat walk.

    Items are visited in document order (a stack, children pushed reversed), so the first fault met is
    the one a recursive walk would meet. Depth is already bounded by the decoder."""
    stack = [item]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            if len(item) > _SHORT_TEXT and len(item.encode()) > MAX_TEXT:
                raise Rejected(Reason.TOO_LARGE, f"text longer than {MAX_TEXT} bytes")
        elif kind is list:
            stack.extend(reversed(item))
        elif kind is dict:
            for key, value in reversed(item.items()):
                push(value)
                key_kind = type(key)
                if key_kind is str:
                    push(key)
                elif key_kind is not int:
                    push(_BAD_KEY)
        elif kind is _BadKey:
            raise Rejected(Reason.BAD_CBOR, "map key neither integer nor text")
        elif kind not in _PLAIN_TYPES:
            raise Rejected(Reason.BAD_CBOR, "simple value other than false, true, null")


class _BadKey:
    """Stands on the walk's stack where a map key of the wrong type was, so it is reported in order."""


_BAD_KEY = _BadKey()
