"""Limits: sizes, lengths, nesting, tags, and the serial stream decoder's bounded buffer.

Memory is measured with tracemalloc (cbor2 allocates through Python's allocator, as the control case
shows), never with timings.
"""
from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from gateway.wire import (
    MAX_FRAME,
    MAX_MESSAGE,
    Command,
    FrameDecoder,
    Reason,
    Rejected,
    build,
    decode_frame,
    encode_command,
    encode_frame,
    parse_command,
    parse_report,
    verify,
)
from gateway.wire.cbor_limits import CBOR2_SEMANTIC_TAGS, decode
from gateway.wire.framing import crc16

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
BIN = json.loads((VECTORS / "valid" / "report_bin.json").read_text())
MESSAGE = bytes.fromhex(BIN["cose"])
PAYLOAD = bytes.fromhex(BIN["payload"])
DEVICE = BIN["device"]
KEY = bytes.fromhex(
    next(d["key"] for d in json.loads((VECTORS / "devices.json").read_text())["devices"] if d["id"] == DEVICE)
)
KEYS = {DEVICE: KEY}
ONE_GB = (1 << 30).to_bytes(4, "big")


def _peak(action: Callable[[], Any]) -> tuple[Any, int]:
    """(result or Rejected, peak bytes traced while running `action`)."""
    tracemalloc.start()
    try:
        try:
            result: Any = action()
        except Rejected as rejection:
            result = rejection
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _reason(action: Callable[[], Any]) -> Reason:
    with pytest.raises(Rejected) as caught:
        action()
    return caught.value.reason


# ------------------------------------------------------------------------------------- CBOR limits


def test_tracemalloc_sees_cbor2_allocations() -> None:
    """Control for the bounds below: a real 400 KB string decoded by cbor2 shows up in the peak."""
    big = cbor2.dumps(b"\x01" * 400_000)
    value, peak = _peak(lambda: decode(big))
    assert value == b"\x01" * 400_000
    assert peak > 400_000


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"\x5a" + ONE_GB, id="bstr-1GB"),
        pytest.param(b"\x7a" + ONE_GB, id="text-1GB"),
        pytest.param(b"\x9a" + ONE_GB, id="array-1G-items"),
        pytest.param(b"\xba" + ONE_GB, id="map-1G-pairs"),
        pytest.param(b"\x5b" + b"\xff" * 8, id="bstr-2^64"),
        pytest.param(b"\x9b" + b"\xff" * 8, id="array-2^64"),
    ],
)
def test_declared_huge_length_allocates_nothing_big(head: bytes) -> None:
    data = head + b"\x01" * 200
    result, peak = _peak(lambda: decode(data))
    assert isinstance(result, Rejected) and result.reason == Reason.BAD_CBOR
    assert peak < 256 * 1024


@pytest.mark.parametrize(
    "opener", [pytest.param(b"\x81", id="arrays"), pytest.param(b"\xa1\x00", id="maps"), pytest.param(b"\xd8\x64", id="tags")]
)
def test_10000_deep_nesting_neither_recurses_nor_allocates(opener: bytes) -> None:
    data = opener * 10_000 + b"\x00"
    result, peak = _peak(lambda: decode(data))
    assert isinstance(result, Rejected) and result.reason == Reason.TOO_DEEP
    assert peak < 64 * 1024


def test_depth_limit_is_four_levels_counted_like_cbor2() -> None:
    assert decode(b"\x81\x81\x81\x81\x00") == [[[[0]]]]
    assert _reason(lambda: decode(b"\x81\x81\x81\x81\x81\x00")) == Reason.TOO_DEEP


def test_huge_lengths_inside_a_verified_message_are_refused_cheaply() -> None:
    """A COSE envelope whose payload bstr claims 1 GB: refused at the envelope, without allocating."""
    protected = bytes.fromhex(BIN["protected"])
    message = b"\xd1\x84" + cbor2.dumps(protected) + b"\xa0" + b"\x5a" + ONE_GB + PAYLOAD
    result, peak = _peak(lambda: verify(message, KEYS.get))
    assert isinstance(result, Rejected) and result.reason == Reason.BAD_CBOR
    assert peak < 256 * 1024


def test_message_size_is_checked_before_decoding() -> None:
    assert _reason(lambda: verify(b"\xff" * (MAX_MESSAGE + 1), KEYS.get)) == Reason.TOO_LARGE
    assert _reason(lambda: verify(b"\xff" * MAX_MESSAGE, KEYS.get)) == Reason.BAD_CBOR
    assert _reason(lambda: parse_report(b"\xff" * (MAX_MESSAGE + 1), DEVICE)) == Reason.TOO_LARGE


def test_text_limit_counts_utf8_bytes() -> None:
    assert decode(cbor2.dumps("é" * 32)) == "é" * 32  # 64 bytes
    assert _reason(lambda: decode(cbor2.dumps("é" * 32 + "a"))) == Reason.TOO_LARGE
    assert _reason(lambda: decode(cbor2.dumps({"k" * 65: 1}))) == Reason.TOO_LARGE


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xf7", id="undefined"),
        pytest.param(b"\xf0", id="simple-16"),
        pytest.param(b"\xf8\x20", id="simple-32"),
        pytest.param(b"\xa1\x41\x00\x00", id="bytes-key"),
        pytest.param(b"\xa1\xf5\x00", id="bool-key"),
        pytest.param(b"\xa1\xf9\x3c\x00\x00", id="float-key"),
        pytest.param(b"\xa1\x81\x00\x00", id="array-key"),
        pytest.param(b"\x00\x00", id="trailing-byte"),
        pytest.param(b"", id="empty"),
    ],
)
def test_outside_the_profile_is_bad_cbor(data: bytes) -> None:
    assert _reason(lambda: decode(data)) == Reason.BAD_CBOR


_RECORDS = [{0: "fill", 2: 5}, {0: "dist", 2: 900}]


@pytest.mark.parametrize(
    "report",
    [
        pytest.param({True: 1, 2: 1, 3: 1, 4: 1_700_000_000, 6: _RECORDS}, id="true-for-version-key"),
        pytest.param({1: 1, 2.0: 1, 3: 1, 4: 1_700_000_000, 6: _RECORDS}, id="float-boot-key"),
        pytest.param({1: 1, 2: 1, 3: 1, 4: 1_700_000_000, 6: [{False: "fill", 2: 5}]}, id="false-name-label"),
        pytest.param({1: 1, 2: 1, 3: 1, 4: 1_700_000_000, 6: [{0: "fill", 2.0: 5}]}, id="float-value-label"),
        pytest.param({1: 1, 2: 1, 3: 1, 4: 1_700_000_000, 6: [{0: "fill", 2: 5, 1.0: "/100"}]},
                     id="float-unit-label"),
    ],
)
def test_report_keys_equal_to_integers_but_not_integers_are_bad_cbor(report: dict[Any, Any]) -> None:
    """The shape checks compare keys by equality (true == 1, 2.0 == 2); the contract wants unsigned
    integer keys, so these are outside the profile however well the report is shaped otherwise."""
    assert _reason(lambda: parse_report(cbor2.dumps(report), DEVICE)) == Reason.BAD_CBOR
    same_with_int_keys = {int(k): v for k, v in report.items()}
    same_with_int_keys[6] = [{int(k): v for k, v in r.items()} for r in report[6]]
    assert parse_report(cbor2.dumps(same_with_int_keys), DEVICE).seq == 1


def test_no_tag_number_is_ever_interpreted() -> None:
    """Every tag up to 65535, and some large ones, is refused in a payload: cbor2's built-in decoders
    (datetimes, bignums, sets, shared references, ...) must never run."""
    numbers = [*range(65536), 2**32 - 1, 2**32, 2**64 - 1]
    for number in numbers:
        for value in (0, b"\x00" * 8, "x", [0], {0: 0}):
            with pytest.raises(Rejected) as caught:
                decode(cbor2.dumps(cbor2.CBORTag(number, value)))
            assert caught.value.reason == Reason.BAD_CBOR, number
    assert set(CBOR2_SEMANTIC_TAGS) < set(numbers)


def test_shared_references_cannot_build_a_cycle() -> None:
    cyclic = bytes.fromhex("d81c81d81d00")  # shareable([sharedref(0)]): a list containing itself
    assert _reason(lambda: decode(cyclic)) == Reason.BAD_CBOR


@pytest.mark.parametrize(
    ("outer", "reason"),
    [
        pytest.param(b"\xd8\x11", None, id="tag-17-long-head"),
        pytest.param(b"\xd2", Reason.BAD_COSE, id="tag-18"),
        pytest.param(b"\xc1", Reason.BAD_COSE, id="tag-1-datetime"),
        pytest.param(b"\xd1\xd1", Reason.BAD_CBOR, id="tag-17-twice"),
        pytest.param(b"\xdb" + b"\xff" * 8, Reason.BAD_COSE, id="tag-2^64-1"),
    ],
)
def test_envelope_outer_tag(outer: bytes, reason: Reason | None) -> None:
    """Only tag 17 (in any head length) opens the envelope; a wrong outer tag is an envelope shape error."""
    message = outer + MESSAGE[1:]
    if reason is None:
        assert verify(message, KEYS.get) == (DEVICE, PAYLOAD)
    else:
        assert _reason(lambda: verify(message, KEYS.get)) == reason


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 990])
def test_build_assembles_what_cbor2_encodes(size: int) -> None:
    """`build` writes the envelope by hand; it must be byte for byte cbor2's encoding of the same item,
    for payloads on both sides of each bstr head length."""
    payload = bytes(range(256)) * 4
    payload = payload[:size]
    message = build(DEVICE, KEY, payload)
    protected, unprotected, same_payload, tag = cbor2.loads(message).value
    assert cbor2.dumps(cbor2.CBORTag(17, [protected, unprotected, payload, tag])) == message
    assert verify(message, KEYS.get) == (DEVICE, payload) and same_payload == payload and unprotected == {}


def test_build_refuses_what_a_receiver_would_refuse() -> None:
    with pytest.raises(ValueError):
        build("Bad_Id", KEY, PAYLOAD)
    with pytest.raises(ValueError):
        build(DEVICE, KEY, b"\x00" * MAX_MESSAGE)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(Command(1, "ack", {"boot": -1, "seq": 2}), id="negative-boot"),
        pytest.param(Command(1, "ack", {"boot": 1, "seq": True}), id="bool-seq"),
        pytest.param(Command(1, "ack", {"boot": 1, "seq": 2.0}), id="float-seq"),
        pytest.param(Command(1, "ack", {"boot": 1, "seq": 2**63}), id="seq-past-int64"),
        pytest.param(Command(-1, "ack", {"boot": 1, "seq": 2}), id="negative-cid"),
        pytest.param(Command(1, "ack", {"boot": 1}), id="missing-seq"),
        pytest.param(Command(1, "ack", {"boot": 1, "seq": 2, "time": 3}), id="extra-arg"),
        pytest.param(Command(1, "time", {"time": "now"}), id="text-time"),
    ],
)
def test_encode_command_refuses_ack_and_time_a_device_would_refuse(command: Command) -> None:
    with pytest.raises(ValueError):
        encode_command(command)


def test_ack_and_time_encode_as_deterministic_cbor() -> None:
    """Their encoder skips cbor2's canonical pass; the bytes must be what that pass gives."""
    for command in (Command(1, "ack", {"seq": 2**63 - 1, "boot": 24}), Command(2**32, "time", {"time": 1_700_000_000})):
        payload = encode_command(command)
        assert payload == cbor2.dumps(cbor2.loads(payload), canonical=True)
        assert parse_command(payload) == command


# ------------------------------------------------------------------------------------------ framing


def test_crc16_is_ccitt_false() -> None:
    """The catalogued check value of CRC-16/CCITT-FALSE, and the CRC of the bin report's frame."""
    assert crc16(b"123456789") == 0x29B1
    assert bytes.fromhex(BIN["frame"]) == encode_frame(MESSAGE)


def test_max_frame_is_the_cobs_bound_of_the_largest_message() -> None:
    assert MAX_FRAME == 1031
    assert len(encode_frame(b"\x01" * MAX_MESSAGE)) - 1 == MAX_FRAME
    assert decode_frame(encode_frame(b"\x01" * MAX_MESSAGE)[:-1]) == b"\x01" * MAX_MESSAGE
    with pytest.raises(ValueError):
        encode_frame(b"\x01" * (MAX_MESSAGE + 1))


def test_decode_frame_rejections() -> None:
    assert _reason(lambda: decode_frame(b"\x01" * (MAX_FRAME + 1))) == Reason.TOO_LARGE
    assert _reason(lambda: decode_frame(b"\x05\x01\x02")) == Reason.BAD_COBS
    assert _reason(lambda: decode_frame(b"\x03\x01\x00\x02")) == Reason.BAD_COBS
    assert _reason(lambda: decode_frame(b"\x03\xff\xff")) == Reason.BAD_CRC  # only a CRC, no message
    flipped = bytearray(encode_frame(MESSAGE)[:-1])
    flipped[5] ^= 0x04 if flipped[5] ^ 0x04 else 0x08
    assert _reason(lambda: decode_frame(bytes(flipped))) == Reason.BAD_CRC


def _stream(chunks: list[bytes]) -> tuple[list[bytes], list[Reason], FrameDecoder]:
    decoder = FrameDecoder()
    messages: list[bytes] = []
    reasons: list[Reason] = []
    for chunk in chunks:
        for result in decoder.feed(chunk):
            if isinstance(result, Rejected):
                reasons.append(result.reason)
            else:
                messages.append(result)
        assert decoder.pending <= MAX_FRAME
    return messages, reasons, decoder


def test_stream_survives_a_boot_banner_and_resynchronises() -> None:
    banner = b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13\r\nMicroPython v1.28\r\n"
    frame = encode_frame(MESSAGE)
    messages, reasons, _ = _stream([banner + b"\x00" + frame + frame])
    assert messages == [MESSAGE, MESSAGE]
    assert len(reasons) == 1 and reasons[0] in (Reason.BAD_COBS, Reason.BAD_CRC)


def test_stream_banner_glued_to_a_frame_costs_that_frame_only() -> None:
    frame = encode_frame(MESSAGE)
    messages, reasons, _ = _stream([b"boot banner\r\n" + frame + frame])
    assert messages == [MESSAGE]
    assert len(reasons) == 1 and reasons[0] in (Reason.BAD_COBS, Reason.BAD_CRC)


def test_stream_split_into_single_bytes_and_odd_chunks() -> None:
    wire = encode_frame(MESSAGE) * 3
    one_by_one = [wire[i : i + 1] for i in range(len(wire))]
    assert _stream(one_by_one)[:2] == ([MESSAGE] * 3, [])
    odd = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    assert _stream(odd)[:2] == ([MESSAGE] * 3, [])


def test_stream_ignores_runs_of_delimiters() -> None:
    frame = encode_frame(MESSAGE)
    messages, reasons, _ = _stream([b"\x00" * 50, frame, b"\x00" * 1000, frame, b"\x00"])
    assert messages == [MESSAGE, MESSAGE] and reasons == []


def test_stream_bounds_its_buffer_on_endless_garbage() -> None:
    """A megabyte with no delimiter: one too_large, the buffer never past MAX_FRAME, then recovery."""
    garbage = bytes((i % 255) + 1 for i in range(4096))
    chunks = [garbage] * 256 + [b"\x00", encode_frame(MESSAGE)]
    messages, reasons, decoder = _stream(chunks)
    assert reasons == [Reason.TOO_LARGE]
    assert messages == [MESSAGE]
    assert decoder.pending == 0


def test_stream_run_just_over_the_bound_is_too_large_then_next_frame_ok() -> None:
    frame = encode_frame(MESSAGE)
    messages, reasons, _ = _stream([b"\x01" * (MAX_FRAME + 1) + b"\x00" + frame])
    assert reasons == [Reason.TOO_LARGE] and messages == [MESSAGE]
    messages, reasons, _ = _stream([b"\xff" * MAX_FRAME + b"\x00" + frame])
    assert reasons == [Reason.BAD_COBS] and messages == [MESSAGE]  # at the bound: decoded, not dropped


def test_stream_interleaves_results_in_order() -> None:
    good = encode_frame(MESSAGE)
    bad_crc = bytearray(good)
    bad_crc[3] ^= 0x01 if bad_crc[3] ^ 0x01 else 0x02
    decoder = FrameDecoder()
    results = decoder.feed(good + bytes(bad_crc) + good)
    assert [r if isinstance(r, bytes) else r.reason for r in results] == [MESSAGE, Reason.BAD_CRC, MESSAGE]
