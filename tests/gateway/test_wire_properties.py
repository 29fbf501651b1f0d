"""Property tests: round trips against the independent vector generator, and hostile bytes into every
decoder never raising anything but Rejected."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.wire import (
    DEVICE_ALARMS,
    MAX_RECORDS,
    MEASUREMENTS,
    Command,
    FrameDecoder,
    Reason,
    Rejected,
    build,
    decode_frame,
    decode_mqtt_report,
    decode_serial_report,
    encode_command,
    encode_frame,
    parse_command,
    parse_report,
    up_topic,
    verify,
)
from tests.gateway.test_wire_vectors import INVALID, KEYS, VALID, _meaning
from tests.vectors import generate

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEVICES = sorted(KEYS)
NUMERIC = sorted(name for name, m in MEASUREMENTS.items() if m.kind == "v")
BOOLEAN = sorted(name for name, m in MEASUREMENTS.items() if m.kind == "vb")
UINT32 = st.integers(min_value=1, max_value=2**32 - 1)


# Device values: integers, or floats exact in float32 (the ESP32's width), plus a few float64 ones.
numbers = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31),
    st.floats(width=16, allow_nan=False, allow_infinity=False),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
offsets = st.one_of(st.integers(min_value=-86400, max_value=0), st.floats(width=32, min_value=-86400, max_value=0))


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["v", "vb", "vs"]))
    if kind == "v":
        record: dict[str, Any] = {"n": draw(st.sampled_from(NUMERIC)), "v": draw(numbers)}
    elif kind == "vb":
        record = {"n": draw(st.sampled_from(BOOLEAN)), "vb": draw(st.booleans())}
    else:
        record = {"n": "alarm", "vs": draw(st.sampled_from(sorted(DEVICE_ALARMS)))}
    offset = draw(st.one_of(st.none(), offsets))
    if offset:
        record["t"] = offset
    return record


@st.composite
def reports(draw: st.DrawFn) -> dict[str, Any]:
    meaning: dict[str, Any] = {"version": 1, "boot": draw(UINT32), "seq": draw(UINT32)}
    clock = draw(st.sampled_from(["time", "uptime", "both"]))
    if clock in ("time", "both"):
        meaning["time"] = draw(st.integers(min_value=0, max_value=2**40))
    if clock in ("uptime", "both"):
        meaning["uptime"] = draw(st.integers(min_value=0, max_value=2**40))
    meaning["records"] = draw(st.lists(records(), min_size=1, max_size=MAX_RECORDS))
    return meaning


def _as_decoded(meaning: dict[str, Any]) -> dict[str, Any]:
    """What the gateway gives back: integral floats arrive as integers (their wire form)."""
    out = dict(meaning)
    out["records"] = [{k: generate.wire_number(v) for k, v in rec.items()} for rec in meaning["records"]]
    return out


@SETTINGS
@given(meaning=reports(), device=st.sampled_from(DEVICES))
def test_report_round_trip_through_the_independent_encoder(meaning: dict[str, Any], device: str) -> None:
    payload = generate.report_payload(meaning)
    message = generate.seal(device, payload)
    assert build(device, KEYS[device], payload) == message
    if len(message) > 1024:
        return
    report = decode_mqtt_report(message, up_topic(device), KEYS.get)
    assert report == decode_serial_report(message, KEYS.get)
    assert _meaning(report) == _as_decoded(meaning)
    assert all(r.unit == MEASUREMENTS[r.name].unit for r in report.readings)


settings_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=16),
)
setting_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["ack", "time", "config", "reboot", "ping"]))
    uint = st.integers(min_value=0, max_value=2**63 - 1)
    if op == "ack":
        args: dict[str, Any] = {"boot": draw(uint), "seq": draw(uint)}
    elif op == "time":
        args = {"time": draw(uint)}
    elif op == "config":
        value = st.one_of(settings_values, st.lists(settings_values, max_size=4))
        args = draw(st.dictionaries(setting_keys, value, max_size=8))
    else:
        args = {}
    return {"version": 1, "cid": draw(uint), "op": op, "args": args}


@SETTINGS
@given(meaning=commands(), device=st.sampled_from(DEVICES))
def test_command_round_trip_matches_the_independent_encoder(meaning: dict[str, Any], device: str) -> None:
    command = Command(meaning["cid"], meaning["op"], meaning["args"])
    payload = encode_command(command)
    if meaning["op"] != "config" or not any(isinstance(v, list) for v in meaning["args"].values()):
        assert payload == generate.command_payload(meaning)
    assert parse_command(payload) == command
    message = build(device, KEYS[device], payload)
    assert verify(message, KEYS.get, device) == (device, payload)


# ------------------------------------------------------------------------------ hostile input


def _only_rejected(action: Any, *args: Any) -> None:
    try:
        action(*args)
    except Rejected as rejection:
        assert isinstance(rejection.reason, Reason)


@SETTINGS
@given(data=st.binary(max_size=1100), device=st.sampled_from(DEVICES))
def test_random_bytes_into_every_decoder(data: bytes, device: str) -> None:
    _only_rejected(decode_frame, data)
    _only_rejected(verify, data, KEYS.get)
    _only_rejected(verify, data, KEYS.get, device)
    _only_rejected(decode_serial_report, data, KEYS.get)
    _only_rejected(decode_mqtt_report, data, up_topic(device), KEYS.get)
    _only_rejected(parse_report, data, device)
    _only_rejected(parse_command, data)
    decoder = FrameDecoder()
    for chunk in (data[: len(data) // 2], data[len(data) // 2 :]):
        for result in decoder.feed(chunk):
            assert isinstance(result, (bytes, Rejected))


SAMPLES = VALID + [c for c in INVALID if "message" in c]


def _mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(min_value=0, max_value=max(len(out) - 1, 0)))
        if action == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "set" and out:
            out[pos] = draw(st.integers(min_value=0, max_value=255))
        elif action == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete" and out:
            del out[pos]
        elif action == "truncate":
            del out[pos:]
    return bytes(out)


@SETTINGS
@given(case=st.sampled_from(SAMPLES), data=st.data())
def test_mutated_messages_are_refused_cleanly(case: dict[str, Any], data: st.DataObject) -> None:
    message = bytes.fromhex(case.get("cose") or case["message"])
    mutated = _mutate(message, data.draw)
    _only_rejected(decode_serial_report, mutated, KEYS.get)
    _only_rejected(decode_frame, _mutate(encode_frame(message[:1024])[:-1], data.draw))


@SETTINGS
@given(case=st.sampled_from(VALID), data=st.data())
def test_mutated_payloads_with_a_good_mac_are_refused_cleanly(case: dict[str, Any], data: st.DataObject) -> None:
    """Resealed with the right key, so the payload checks (stages 8 and 9) are what runs."""
    device = case["device"]
    payload = _mutate(bytes.fromhex(case["payload"]), data.draw)
    message = generate.seal(device, payload)
    if case["type"] == "report":
        _only_rejected(decode_serial_report, message, KEYS.get)
    else:
        _only_rejected(parse_command, verify(message, KEYS.get, device)[1])


# Arbitrary CBOR items, deeper and odder than any report: tags (cbor2's built-ins among them), floats of
# every kind, simple values, byte strings, mixed keys.
items = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**64), max_value=2**64 - 1),
        st.floats(),
        st.text(max_size=70),
        st.binary(max_size=8),
        st.booleans(),
        st.none(),
        st.just(cbor2.undefined),
        st.integers(min_value=0, max_value=255).filter(lambda n: not 20 <= n <= 31).map(cbor2.CBORSimpleValue),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.integers(min_value=-5, max_value=12), st.text(max_size=3)), children, max_size=4),
        st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 17, 25, 28, 29, 258, 55799, 1000]), children),
    ),
    max_leaves=12,
)


@SETTINGS
@given(item=items, device=st.sampled_from(DEVICES))
def test_arbitrary_cbor_payloads_are_refused_cleanly(item: Any, device: str) -> None:
    payload = cbor2.dumps(item)
    message = generate.seal(device, payload)
    if len(message) > 1024:
        return
    _only_rejected(decode_serial_report, message, KEYS.get)
    _only_rejected(parse_command, payload)


@SETTINGS
@given(item=items)
def test_arbitrary_cbor_as_the_envelope_is_refused_cleanly(item: Any) -> None:
    _only_rejected(verify, cbor2.dumps(cbor2.CBORTag(17, item)), KEYS.get)
    _only_rejected(verify, cbor2.dumps(item), KEYS.get)


@SETTINGS
@given(meaning=reports(), extra=st.binary(min_size=1, max_size=8))
def test_trailing_bytes_after_a_payload_are_bad_cbor(meaning: dict[str, Any], extra: bytes) -> None:
    payload = generate.report_payload(meaning) + extra
    if len(payload) > 1000:
        return
    try:
        parse_report(payload, "bin-0042")
    except Rejected as rejection:
        assert rejection.reason == Reason.BAD_CBOR
    else:
        raise AssertionError("trailing bytes accepted")


@SETTINGS
@given(value=st.floats(), name=st.sampled_from(NUMERIC))
def test_non_finite_values_are_bad_report(value: float, name: str) -> None:
    payload = generate.report_payload(generate._replace(generate.BIN_REPORT, records=[{"n": name, "v": value}]))
    if math.isfinite(value):
        assert parse_report(payload, "bin-0042").readings[0].value == generate.wire_number(value)
    else:
        try:
            parse_report(payload, "bin-0042")
        except Rejected as rejection:
            assert rejection.reason == Reason.BAD_REPORT
        else:
            raise AssertionError("non-finite value accepted")
