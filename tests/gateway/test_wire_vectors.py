"""The gateway's wire code against every golden vector in tests/vectors/ (made without gateway code)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.wire import (
    DEVICE_ALARMS,
    GATEWAY_ALARMS,
    MEASUREMENTS,
    FrameDecoder,
    Reason,
    Rejected,
    Report,
    build,
    decode_frame,
    decode_mqtt_report,
    decode_serial_report,
    device_from_topic,
    encode_command,
    encode_frame,
    parse_command,
    parse_report,
    seal_command,
    up_topic,
    verify,
)
from kerbline.wire import reject

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FRAMING_REASONS = {Reason.TOO_LARGE, Reason.BAD_COBS, Reason.BAD_CRC}


def _cases(folder: str) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((VECTORS / folder).glob("*.json"))]


VALID = _cases("valid")
INVALID = _cases("invalid")
KEYS = {d["id"]: bytes.fromhex(d["key"]) for d in json.loads((VECTORS / "devices.json").read_text())["devices"]}


def _meaning(report: Report) -> dict[str, Any]:
    """A Report written back in the vectors' meaning form (units left out: they are the defaults)."""
    meaning: dict[str, Any] = {"version": 1, "boot": report.boot, "seq": report.seq}
    if report.time is not None:
        meaning["time"] = report.time
    if report.uptime is not None:
        meaning["uptime"] = report.uptime
    records = []
    for reading in report.readings:
        label = {str: "vs", bool: "vb"}.get(type(reading.value), "s" if reading.is_sum else "v")
        record: dict[str, Any] = {"n": reading.name, label: reading.value}
        if reading.time_offset:
            record["t"] = reading.time_offset
        records.append(record)
    meaning["records"] = records
    return meaning


def test_vector_set_is_complete() -> None:
    assert len(VALID) >= 10 and len(INVALID) >= 30
    assert {c["meaning"]["op"] for c in VALID if c["type"] == "command"} == {"ack", "time", "config", "reboot", "ping"}
    assert {c["expect"] for c in INVALID} == set(Reason) - {Reason.DUPLICATE, Reason.REPLAY}


@pytest.mark.parametrize("case", VALID, ids=lambda c: c["name"])
def test_valid_vector(case: dict[str, Any]) -> None:
    device, key = case["device"], KEYS[case["device"]]
    message, payload = bytes.fromhex(case["cose"]), bytes.fromhex(case["payload"])
    wire = bytes.fromhex(case["frame"])

    assert encode_frame(message) == wire
    assert FrameDecoder().feed(wire) == [message]
    assert build(device, key, payload) == message
    assert verify(message, KEYS.get, device) == (device, payload)

    if case["type"] == "report":
        report = decode_mqtt_report(message, up_topic(device), KEYS.get)
        assert report == decode_serial_report(message, KEYS.get)
        assert report.device == device
        assert _meaning(report) == case["meaning"]
        for reading in report.readings:
            assert reading.unit == MEASUREMENTS[reading.name].unit
    else:
        command = parse_command(payload)
        meaning = case["meaning"]
        assert (command.cid, command.op, dict(command.args)) == (meaning["cid"], meaning["op"], meaning["args"])
        assert encode_command(command) == payload
        assert seal_command(device, key, command) == message


def _outcome(case: dict[str, Any]) -> str:
    """"ok" or the reason of the first failing check, running every stage a receiver runs."""
    try:
        if case["link"] == "serial":
            wire = bytes.fromhex(case["frame"])
            assert wire.endswith(b"\x00")
            device, payload = verify(decode_frame(wire[:-1]), KEYS.get)
        else:
            leaf = "up" if case["type"] == "report" else "down"
            expected = device_from_topic(case["topic"], leaf)
            assert expected == case["device"]
            device, payload = verify(bytes.fromhex(case["message"]), KEYS.get, expected)
        if case["type"] == "report":
            parse_report(payload, device)
        else:
            parse_command(payload)
    except Rejected as rejection:
        return rejection.reason
    return "ok"


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["name"])
def test_invalid_vector(case: dict[str, Any]) -> None:
    assert _outcome(case) == case["expect"]


@pytest.mark.parametrize("case", [c for c in INVALID if c["link"] == "serial"], ids=lambda c: c["name"])
def test_invalid_serial_vector_as_a_stream(case: dict[str, Any]) -> None:
    """Fed to the stream decoder, a framing fault gives no message and is the first rejection."""
    wire = bytes.fromhex(case["frame"])
    results = FrameDecoder().feed(wire)
    if case["expect"] in FRAMING_REASONS:
        assert not [r for r in results if isinstance(r, bytes)]
        assert isinstance(results[0], Rejected) and results[0].reason == case["expect"]
    else:
        assert results == [decode_frame(wire[:-1])]


def test_units_table_matches_the_vectors() -> None:
    table = json.loads((VECTORS / "units.json").read_text())
    assert {name: (m.unit, m.kind) for name, m in MEASUREMENTS.items()} == {
        name: (entry["unit"], entry["kind"]) for name, entry in table["names"].items()
    }
    assert DEVICE_ALARMS == set(table["alarms"]["device"])
    assert GATEWAY_ALARMS == set(table["alarms"]["gateway"])


def test_reasons_match_the_firmware_word_for_word() -> None:
    firmware = {value for name, value in vars(reject).items() if name.isupper() and isinstance(value, str)}
    assert {reason.value for reason in Reason} == firmware


@pytest.mark.parametrize(
    "topic",
    ["kerbline/v1/bin-0042/down", "kerbline/v2/bin-0042/up", "other/v1/bin-0042/up", "kerbline/v1/bin-0042/up/x", ""],
)
def test_report_on_a_topic_not_its_own_up_topic_is_kid_mismatch(topic: str) -> None:
    case = next(c for c in VALID if c["name"] == "report_bin")
    with pytest.raises(Rejected) as caught:
        decode_mqtt_report(bytes.fromhex(case["cose"]), topic, KEYS.get)
    assert caught.value.reason == Reason.KID_MISMATCH
