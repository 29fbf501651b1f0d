"""Decoding a device's traffic for people: frames verified by gateway.wire, console text, readable reports."""
from __future__ import annotations

import cbor2
import pytest

from gateway.wire import Reason, build, encode_frame, parse_report
from gateway.tools.watch import MAX_PENDING, Event, Got, Refused, StreamSplitter, Text, format_report

KEY = bytes(range(32))
OTHER_KEY = bytes(32)


def report(seq: int = 1, device: str = "bin-0042", key: bytes = KEY, time: int | None = None) -> bytes:
    payload = {1: 1, 2: 7, 3: seq, 6: [{0: "fill", 2: 42}, {0: "dist", 2: 812}, {0: "temp", 2: 19.5},
                                       {0: "tilt", 4: True}, {0: "alarm", 3: "full"}]}
    payload[4 if time else 5] = time or 1500
    return build(device, key, cbor2.dumps(payload))


def lookup(device: str) -> bytes | None:
    return KEY if device == "bin-0042" else None


def events(data: bytes, byte_by_byte: bool = False) -> list[Event]:
    splitter = StreamSplitter(lookup)
    if byte_by_byte:
        return [e for i in range(len(data)) for e in splitter.feed(data[i:i + 1])]
    return splitter.feed(data)


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_frames_text_and_refusals_in_order(byte_by_byte: bool) -> None:
    stream = (b"boot: skip pin not read\r\n" + encode_frame(report(1))
              + b"crash: ValueError\r\n" + encode_frame(report(2))[:-1] + b"\x00"  # text glued to the frame
              + encode_frame(report(3, key=OTHER_KEY))
              + encode_frame(report(4, device="bin-9"))
              + b"\x91\x02\xff\xee\x00")
    got = events(stream, byte_by_byte)
    assert [type(e).__name__ for e in got] == ["Text", "Got", "Text", "Got", "Refused", "Refused", "Refused"]
    assert got[0] == Text("boot: skip pin not read") and got[2] == Text("crash: ValueError")
    assert [e.report.seq for e in got if isinstance(e, Got)] == [1, 2]
    assert [e.reason for e in got if isinstance(e, Refused)] == [Reason.BAD_TAG, Reason.UNKNOWN_DEVICE,
                                                                 Reason.BAD_COBS]


def test_text_glued_before_a_frame_without_a_newline_between_lines_is_split_off() -> None:
    body = encode_frame(report(5))
    last = events(b"\x00" + b"MPY: soft reboot\r\n" + body)[-1]
    assert isinstance(last, Got) and last.report.seq == 5


def test_a_long_run_without_frame_end_is_bounded() -> None:
    splitter = StreamSplitter(lookup)
    binary = splitter.feed(b"\xff" * (3 * MAX_PENDING))
    assert binary == [Refused(Reason.TOO_LARGE, f"more than {MAX_PENDING} bytes without a frame end")] * 2
    text = StreamSplitter(lookup).feed(b"x" * (MAX_PENDING + 1))
    assert text == [Text("x" * (MAX_PENDING + 1))]
    # and the splitter is back in step at the next frame
    assert isinstance(splitter.feed(b"\x00" + encode_frame(report(6)))[-1], Got)


def test_readable_report() -> None:
    parsed = parse_report(cbor2.dumps({1: 1, 2: 7, 3: 9, 4: 1767225600, 6: [
        {0: "fill", 2: 42}, {0: "dist", 2: 812}, {0: "temp", 2: 19.5}, {0: "batt", 2: 3712}, {0: "tilt", 4: False},
        {0: "lux", 2: 12}, {0: "energy", 5: 1.5}, {0: "alarm", 3: "full"}]}), "bin-0042")
    assert format_report(parsed) == (
        "bin-0042 boot 7 seq 9 at 2026-01-01 00:00:00Z: fill level 42 %, distance 812 mm, temperature 19.5 °C, "
        "battery 3712 mV, not tilted, light 12 lx, energy since boot 1.5 Wh (sum), ALARM full")
    untimed = parse_report(cbor2.dumps({1: 1, 2: 7, 3: 9, 5: 1500, 6: [{0: "lamp", 4: True}]}), "lamp-1")
    assert format_report(untimed) == "lamp-1 boot 7 seq 9 at uptime 1.5 s (clock not set): lamp on"
