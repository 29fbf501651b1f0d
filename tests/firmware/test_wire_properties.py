"""Property tests holding the firmware's wire code and the gateway's to one contract.

The firmware side runs as a long-lived oracle process (tests/firmware/mp/wire_oracle.py) under the real
MicroPython VM with a 64 KB heap and the compiled .mpy set, and under CPython; hypothesis drives both.
The firmware's encoders are also checked against independent implementations: cbor2 (canonical),
the `cobs` package and binascii's CRC.
"""
from __future__ import annotations

import binascii
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from cobs import cobs as cobs_reference
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway import wire as gw
from kerbline.wire import cbor, cobs, crc16, cose, frame, report
from kerbline.wire.reject import Reject
from tests.harness.micropython import start_micropython

ORACLE = Path(__file__).resolve().parent / "mp" / "wire_oracle.py"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Oracle:
    """Talks to one wire_oracle process over its stdin/stdout, one line each way."""

    def __init__(self, stdin, stdout, describe) -> None:
        self._stdin, self._stdout, self._describe = stdin, stdout, describe

    def ask(self, line: str) -> str:
        self._stdin.write(line.encode() + b"\n")
        self._stdin.flush()
        reply = self._stdout.readline().decode().strip()
        assert reply, f"oracle died: {self._describe()}"
        assert not reply.startswith("crash"), f"firmware code crashed on {line[:200]!r}: {reply}"
        return reply


@pytest.fixture(scope="module", params=["micropython", "cpython"])
def oracle(request: pytest.FixtureRequest) -> Iterator[Oracle]:
    if request.param == "micropython":
        with start_micropython(ORACLE, heap="64k") as proc:
            yield Oracle(proc.stdin, proc.stdout, proc.stderr_text)
    else:
        proc = subprocess.Popen([sys.executable, str(ORACLE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            yield Oracle(proc.stdin, proc.stdout, lambda: "cpython oracle")
        finally:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ strategies

device_ids = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)
keys = st.binary(min_size=32, max_size=32)
uints = st.integers(min_value=1, max_value=2**32 - 1)
NUMBER_NAMES = sorted(n for n, m in gw.MEASUREMENTS.items() if m.kind == "v")
BOOL_NAMES = sorted(n for n, m in gw.MEASUREMENTS.items() if m.kind == "vb")


def _float32_exact(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


# What a device sends: integers, sixteenths (exact in float16 for temperatures) and float32 values.
numbers = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.integers(min_value=-4000, max_value=4000).map(lambda n: n / 16),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(_float32_exact),
)
records = st.one_of(
    st.tuples(st.sampled_from(NUMBER_NAMES), numbers),
    st.tuples(st.sampled_from(BOOL_NAMES), st.booleans()),
    st.tuples(st.just("alarm"), st.sampled_from(sorted(gw.DEVICE_ALARMS))),
    st.tuples(st.sampled_from(NUMBER_NAMES), numbers, st.integers(min_value=-3600, max_value=0)),
)
reports = st.fixed_dictionaries(
    {"boot": uints, "seq": uints, "records": st.lists(records, min_size=1, max_size=32)},
    optional={"time": st.integers(min_value=0, max_value=2**32 - 1)},
)


def _with_clock(spec: dict) -> dict:
    return spec if "time" in spec else {**spec, "uptime": spec["seq"] * 1000}


def _readings(records_: list) -> list[tuple]:
    return [(r[0], r[1], r[2] if len(r) > 2 else 0) for r in records_]


# ---------------------------------------------------------------------------------------- properties


@SETTINGS
@given(device=device_ids, key=keys, spec=reports)
def test_firmware_frames_are_accepted_by_the_gateway(oracle: Oracle, device: str, key: bytes, spec: dict) -> None:
    spec = _with_clock(spec)
    reply = oracle.ask(f"build {device} {key.hex()} {json.dumps(spec)}")
    wire_frame = bytes.fromhex(reply.split()[1])
    # both interpreters build the same bytes as the firmware code under CPython
    local = frame.encode(cose.Sealer(device, key).seal(
        report.encode(spec["boot"], spec["seq"], spec["records"], spec.get("time"), spec.get("uptime"))))
    assert wire_frame == local
    decoded = gw.decode_serial_report(gw.decode_frame(wire_frame[:-1]), {device: key}.get)
    assert (decoded.device, decoded.boot, decoded.seq, decoded.time, decoded.uptime) == (
        device, spec["boot"], spec["seq"], spec.get("time"), spec.get("uptime"))
    assert [(r.name, r.value, r.time_offset) for r in decoded.readings] == _readings(spec["records"])
    for reading in decoded.readings:
        assert type(reading.value) is type(reading.value)  # noqa: E721 (value kinds checked by the gateway)
        assert reading.unit == gw.MEASUREMENTS[reading.name].unit
    # and the firmware's own receiving side reads it back the same
    meaning = json.loads(oracle.ask(f"report {key.hex()} - {wire_frame.hex()}")[3:])
    assert [(r["n"], r.get("v", r.get("vs", r.get("vb"))), r.get("t", 0)) for r in meaning["records"]] == \
        _readings(spec["records"])


commands = st.one_of(
    st.builds(gw.Command, uints, st.just("ack"), st.fixed_dictionaries({"boot": uints, "seq": uints})),
    st.builds(gw.Command, uints, st.just("time"), st.fixed_dictionaries({"time": uints})),
    st.builds(gw.Command, uints, st.just("config"), st.dictionaries(
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
        st.one_of(st.integers(min_value=0, max_value=86400), st.booleans(), st.text(max_size=20)),
        max_size=6)),
    st.builds(gw.Command, uints, st.sampled_from(["reboot", "ping"]), st.just({})),
)


@SETTINGS
@given(device=device_ids, key=keys, command=commands)
def test_gateway_commands_are_accepted_by_the_firmware(oracle: Oracle, device: str, key: bytes,
                                                       command: gw.Command) -> None:
    message = gw.seal_command(device, key, command)
    cid, op, args = json.loads(oracle.ask(f"command {device} {key.hex()} {message.hex()}")[3:])
    assert (cid, op) == (command.cid, command.op)
    named = {"ack": {"2": "boot", "3": "seq"}, "time": {"4": "time"}}.get(op, {})
    assert {named.get(k, k): v for k, v in args.items()} == dict(command.args)


def _gateway_verdict(data: bytes, key: bytes) -> str:
    try:
        gw.decode_serial_report(gw.decode_frame(data), {"bin-0042": key}.get)
    except gw.Rejected as e:
        return f"reject {e.reason}"
    return "ok"


@SETTINGS
@given(spec=reports, data=st.data())
def test_mutated_frames_get_the_same_verdict_on_both_sides(oracle: Oracle, spec: dict, data: st.DataObject) -> None:
    key = bytes(32)
    spec = _with_clock(spec)
    body = bytearray(frame.encode(cose.Sealer("bin-0042", key).seal(
        report.encode(spec["boot"], spec["seq"], spec["records"], spec.get("time"), spec.get("uptime")))))[:-1]
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            body[at] ^= data.draw(st.integers(min_value=1, max_value=255))
        elif action == "delete" and len(body) > 1:
            del body[at]
        else:
            body.insert(at, data.draw(st.integers(min_value=1, max_value=255)))
    assume(0 not in body)  # a 0x00 splits the frame; the deframers' stream handling is tested apart
    firmware = oracle.ask(f"report {key.hex()} - {bytes(body).hex()}00")
    firmware = firmware if firmware.startswith("reject") else "ok"
    assert firmware == _gateway_verdict(bytes(body), key)


@SETTINGS
@given(blob=st.binary(max_size=300))
def test_random_bytes_never_crash_the_firmware_decoder(oracle: Oracle, blob: bytes) -> None:
    reply = oracle.ask(f"cbor {blob.hex()}")
    assert reply == "ok" or reply.split()[1] in {"bad_cbor", "too_deep", "too_large"}


@SETTINGS
@given(blob=st.binary(max_size=1200))
def test_random_frames_never_crash_either_side(oracle: Oracle, blob: bytes) -> None:
    body = blob.replace(b"\x00", b"")
    assume(body)
    assert oracle.ask(f"report {bytes(32).hex()} - {body.hex()}00").startswith("reject")
    assert _gateway_verdict(body, bytes(32)).startswith("reject")


# ----------------------------------------------- firmware codecs against independent implementations

cbor_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64 - 1),
              st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            # keys whose encodings are all one byte long or all text: there RFC 8949's bytewise
                            # order and cbor2's length-first (RFC 7049) canonical order agree
                            st.dictionaries(st.one_of(st.integers(min_value=-24, max_value=23), st.text(max_size=8)),
                                            inner, max_size=5)),
    max_leaves=12,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=cbor_values)
def test_cbor_encoding_matches_cbor2_canonical_and_round_trips(value: object) -> None:
    encoded = cbor.dumps(value)
    reference = cbor2.dumps(value, canonical=True)
    assert encoded == reference
    if _depth(value) <= cbor.MAX_DEPTH:
        assert cbor.loads(encoded) == cbor2.loads(reference)
    else:
        with pytest.raises(Reject) as refused:
            cbor.loads(encoded)
        assert refused.value.reason == "too_deep"


def test_map_keys_sort_bytewise_as_rfc_8949_section_4_2_1_says() -> None:
    """The RFC's own example order: 10, 100, -1, "z", "aa" (cbor2's canonical order would put -1 first)."""
    encoded = cbor.dumps({"aa": 0, -1: 0, "z": 0, 100: 0, 10: 0})
    assert encoded == bytes.fromhex("a5" "0a00" "186400" "2000" "617a00" "62616100")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1100))
def test_cobs_matches_the_cobs_package_and_round_trips(data: bytes) -> None:
    assert cobs.encode(data) == cobs_reference.encode(data)
    assert cobs.decode(cobs.encode(data)) == data


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1100))
def test_crc16_matches_binascii(data: bytes) -> None:
    assert crc16.crc16(data) == binascii.crc_hqx(data, 0xFFFF)
