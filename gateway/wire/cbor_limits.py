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

Resource bounds: callers cap the input at 1024 bytes first; cbor2 refuses nesting past `max_depth`
without recursing further and reads a declared length in bounded chunks, so a 1 GB length in a short
input fails with an end-of-data error instead of an allocation (tests/gateway/test_wire_limits.py).
"""
from __future__ import annotations

import io
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


def decode(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The one CBOR item that fills `data`, or Rejected(bad_cbor | too_deep | too_large).

    `max_depth` is lowered by the caller when it has already taken off an enclosing tag.
    """
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream, max_depth=max_depth, **_DECODER_OPTIONS).decode()
    except cbor2.CBORDecodeError as exc:
        raise _rejection(exc) from None
    if stream.tell() != len(data):
        raise Rejected(Reason.BAD_CBOR, "bytes after the CBOR item")
    _check_profile(item)
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


def _check_profile(item: Any) -> None:
    """Text length, key types and simple values, which cbor2 has no option for. Depth is bounded."""
    kind = type(item)
    if kind is str:
        if len(item) > _SHORT_TEXT and len(item.encode()) > MAX_TEXT:
            raise Rejected(Reason.TOO_LARGE, f"text longer than {MAX_TEXT} bytes")
    elif kind is list:
        for element in item:
            _check_profile(element)
    elif kind is dict:
        for key, value in item.items():
            key_kind = type(key)
            if key_kind is str:
                _check_profile(key)
            elif key_kind is not int:
                raise Rejected(Reason.BAD_CBOR, "map key neither integer nor text")
            _check_profile(value)
    elif kind not in _PLAIN_TYPES:
        raise Rejected(Reason.BAD_CBOR, "simple value other than false, true, null")
