"""Golden vectors for the Kerbline wire contract, built from hand-written meanings.

Every byte here comes from independent libraries — `cbor2` (canonical encoding), the PyPI `cobs`
package, `hmac`/`hashlib` and `binascii.crc_hqx` (CRC-16/CCITT-FALSE) — and never from the firmware or
the gateway, so the vectors can catch a bug that both implementations share.

Run `python tests/vectors/generate.py [OUTDIR]` (default: this folder). The JSON files are committed;
`tests/vectors/test_generate.py` re-runs this script and checks they have not drifted.

Files written:
- `devices.json`: the test devices and their (fake) keys.
- `units.json`: default unit and value kind of every measurement name (omitted on the wire).
- `valid/NAME.json`: name, description, type ("report"|"command"), device, meaning, payload, protected,
  cose, mac_structure, frame (all hex), expect "ok". `frame` is COBS(cose + CRC-16 big-endian) + 00.
- `invalid/NAME.json`: name, description, type, device, link ("serial"|"mqtt"), `frame` (serial: the
  bytes on the wire, final 00 included) or `topic` + `message` (mqtt: the raw COSE bytes), expect (the
  rejection reason), stage (where the check sits, free text).

Serial vector semantics: the frame body (the bytes before the final 00) handed to the frame decoder
gives `expect`; fed to a streaming decoder, the frame yields no message and its first rejection is
`expect`.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import sys
from pathlib import Path
from typing import Any

import cbor2
from cobs import cobs  # type: ignore[import-untyped]  # no stubs

HERE = Path(__file__).resolve().parent

REPORT_KEYS = {"version": 1, "boot": 2, "seq": 3, "time": 4, "uptime": 5, "records": 6}
SENML_LABELS = {"n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "bn": -2, "bt": -3, "bu": -4}
COMMAND_KEYS = {"version": 1, "cid": 10, "op": 11, "args": 12}
# ack and time arguments reuse the report keys they refer to; config arguments keep their text keys.
ARG_KEYS = {"boot": 2, "seq": 3, "time": 4}
COSE_MAC0 = 17
ALG_HMAC_256_64 = 4
MAX_MESSAGE = 1024

DEVICES = [
    {"id": "bin-0042", "kind": "bin"},
    {"id": "bin-0043", "kind": "bin"},
    {"id": "lamp-0117", "kind": "light"},
]

# name -> (unit or None, value kind). SenML units: RFC 8428 registry and RFC 8798 secondary units.
UNITS: dict[str, tuple[str | None, str]] = {
    "fill": ("/100", "v"),
    "dist": ("mm", "v"),
    "temp": ("Cel", "v"),
    "batt": ("mV", "v"),
    "tilt": (None, "vb"),
    "lid": (None, "vb"),
    "lux": ("lx", "v"),
    "lamp": (None, "vb"),
    "dim": ("/100", "v"),
    "power": ("W", "v"),
    "volt": ("V", "v"),
    "curr": ("mA", "v"),
    "energy": ("Wh", "v"),
    "rssi": ("dBm", "v"),
    "heap": ("B", "v"),
    "queue": ("count", "v"),
    "uptime": ("s", "v"),
    "alarm": (None, "vs"),
    "fault": (None, "vs"),
}
DEVICE_ALARMS = ["full", "fire", "tilt", "lowbatt", "lamp_fail", "sensor_fault"]
GATEWAY_ALARMS = ["offline"]


# ---------------------------------------------------------------------------------------- primitives


def device_key(device_id: str) -> bytes:
    """A clearly fake, reproducible key: nobody may mistake it for a provisioned secret."""
    return hashlib.sha256(b"KERBLINE FAKE TEST KEY " + device_id.encode()).digest()


def dumps(obj: Any) -> bytes:
    """Deterministic CBOR (sorted keys, shortest forms)."""
    return cbor2.dumps(obj, canonical=True)


def wire_number(value: Any) -> Any:
    """Integral floats go on the wire as integers, their shortest exact form, when a CBOR integer
    (major type 0 or 1, -2**64 .. 2**64-1) can hold them; beyond that they stay floats."""
    if isinstance(value, float) and value.is_integer() and -(2**64) <= value < 2**64:
        return int(value)
    return value


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: binascii.crc_hqx is poly 0x1021, unreflected, no final xor; init 0xFFFF."""
    return binascii.crc_hqx(data, 0xFFFF)


def frame(message: bytes, crc: int | None = None) -> bytes:
    """COBS(message + CRC big-endian) + 00; `crc` overrides the checksum (for bad-CRC vectors)."""
    check = crc16(message) if crc is None else crc
    encoded: bytes = cobs.encode(message + check.to_bytes(2, "big"))
    return encoded + b"\x00"


def protected_header(kid: bytes, alg: int = ALG_HMAC_256_64) -> bytes:
    return dumps({1: alg, 4: kid})


def mac_structure(protected: bytes, payload: bytes) -> bytes:
    return dumps(["MAC0", protected, b"", payload])


def mac_tag(key: bytes, protected: bytes, payload: bytes) -> bytes:
    return hmac.new(key, mac_structure(protected, payload), hashlib.sha256).digest()[:8]


def cose(protected: bytes, payload: bytes, tag: bytes, tag_number: int = COSE_MAC0) -> bytes:
    return dumps(cbor2.CBORTag(tag_number, [protected, {}, payload, tag]))


def seal(device_id: str, payload: bytes, key: bytes | None = None) -> bytes:
    """A correct COSE_Mac0 for `payload` from `device_id` (with its test key unless `key` is given)."""
    protected = protected_header(device_id.encode())
    return cose(protected, payload, mac_tag(key or device_key(device_id), protected, payload))


# ------------------------------------------------------------------------------------------ meanings


def report_map(meaning: dict[str, Any]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for name, value in meaning.items():
        if name == "records":
            value = [{SENML_LABELS[k]: wire_number(v) for k, v in rec.items()} for rec in value]
        out[REPORT_KEYS[name]] = value
    return out


def report_payload(meaning: dict[str, Any]) -> bytes:
    return dumps(report_map(meaning))


def command_payload(meaning: dict[str, Any]) -> bytes:
    args = meaning["args"]
    if meaning["op"] in ("ack", "time"):
        args = {ARG_KEYS[k]: v for k, v in args.items()}
    else:
        args = {k: wire_number(v) for k, v in args.items()}
    return dumps({1: meaning["version"], 10: meaning["cid"], 11: meaning["op"], 12: args})


BIN_REPORT = {
    "version": 1,
    "boot": 3,
    "seq": 17,
    "time": 1764345600,
    "records": [
        {"n": "fill", "v": 42},
        {"n": "dist", "v": 1234},
        {"n": "temp", "v": 21.5},
        {"n": "batt", "v": 3712},
    ],
}


def _replace(meaning: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(meaning)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


VALID_REPORTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("report_bin", "bin report with device time: fill, dist, temp (float16), batt", "bin-0042", BIN_REPORT),
    (
        "report_bin_uptime",
        "the same bin report from a device whose clock is not set: uptime (ms) instead of time",
        "bin-0042",
        {
            "version": 1,
            "boot": 3,
            "seq": 17,
            "uptime": 86400123,
            "records": BIN_REPORT["records"],
        },
    ),
    (
        "report_light_lamp_fail",
        "light report: lux, lamp (vb), dim, power, volt, curr, energy and a lamp_fail alarm",
        "lamp-0117",
        {
            "version": 1,
            "boot": 12,
            "seq": 4051,
            "time": 1764392400,
            "records": [
                {"n": "lux", "v": 3},
                {"n": "lamp", "vb": True},
                {"n": "dim", "v": 100},
                {"n": "power", "v": 0},
                {"n": "volt", "v": 231},
                {"n": "curr", "v": 0},
                {"n": "energy", "v": 182340},
                {"n": "alarm", "vs": "lamp_fail"},
            ],
        },
    ),
    (
        "report_bin_full_offset",
        "bin report with a `full` alarm, and a fill reading taken 30 s before the report time (t offset)",
        "bin-0043",
        {
            "version": 1,
            "boot": 1,
            "seq": 250,
            "time": 1764400000,
            "records": [
                {"n": "fill", "v": 96, "t": -30},
                {"n": "fill", "v": 97},
                {"n": "alarm", "vs": "full"},
            ],
        },
    ),
    (
        "report_safe_mode",
        "a device in safe mode: a sensor_fault alarm with the reason as a `fault` text, clock not set",
        "bin-0043",
        {
            "version": 1,
            "boot": 12,
            "seq": 1,
            "uptime": 2350,
            "records": [
                {"n": "alarm", "vs": "sensor_fault"},
                {"n": "fault", "vs": "config: 'depth_mm' must be 100..5000"},
            ],
        },
    ),
    (
        "report_float_widths",
        "negative temperature (float16), energy exact only in float32, volt exact only in float64",
        "lamp-0117",
        {
            "version": 1,
            "boot": 2,
            "seq": 1,
            "time": 1764300000,
            "records": [
                {"n": "temp", "v": -7.25},
                {"n": "energy", "v": 12345.5},
                {"n": "volt", "v": 230.1},
                {"n": "rssi", "v": -71},
            ],
        },
    ),
]

VALID_COMMANDS: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "command_ack",
        "cumulative ack: every report of boot 3 up to seq 17, and of earlier boots, is stored",
        "bin-0042",
        {"version": 1, "cid": 5, "op": "ack", "args": {"boot": 3, "seq": 17}},
    ),
    (
        "command_time",
        "set the device clock (unix seconds)",
        "bin-0042",
        {"version": 1, "cid": 6, "op": "time", "args": {"time": 1764345600}},
    ),
    (
        "command_config",
        "change settings: report interval (s) and fill threshold (/100); text keys",
        "bin-0042",
        {"version": 1, "cid": 7, "op": "config", "args": {"interval": 900, "full_at": 80}},
    ),
    ("command_reboot", "reboot; args is an empty map", "lamp-0117", {"version": 1, "cid": 8, "op": "reboot", "args": {}}),
    ("command_ping", "ping; the device answers with a report", "bin-0043", {"version": 1, "cid": 9, "op": "ping", "args": {}}),
]


def valid_case(name: str, description: str, kind: str, device: str, meaning: dict[str, Any]) -> dict[str, Any]:
    payload = report_payload(meaning) if kind == "report" else command_payload(meaning)
    protected = protected_header(device.encode())
    message = cose(protected, payload, mac_tag(device_key(device), protected, payload))
    return {
        "name": name,
        "description": description,
        "type": kind,
        "device": device,
        "meaning": meaning,
        "payload": payload.hex(),
        "protected": protected.hex(),
        "cose": message.hex(),
        "mac_structure": mac_structure(protected, payload).hex(),
        "frame": frame(message).hex(),
        "expect": "ok",
    }


# ------------------------------------------------------------------------------------------ invalid

UP = "kerbline/v1/{}/up"
DOWN = "kerbline/v1/{}/down"


def _serial(name: str, description: str, device: str, wire: bytes, expect: str, stage: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "type": "report",
        "device": device,
        "link": "serial",
        "frame": wire.hex(),
        "expect": expect,
        "stage": stage,
    }


def _mqtt(
    name: str, description: str, device: str, message: bytes, expect: str, stage: str, kind: str = "report"
) -> dict[str, Any]:
    topic = (UP if kind == "report" else DOWN).format(device)
    return {
        "name": name,
        "description": description,
        "type": kind,
        "device": device,
        "link": "mqtt",
        "topic": topic,
        "message": message.hex(),
        "expect": expect,
        "stage": stage,
    }


class Raw:
    """Bytes spliced verbatim into cbor2's output, for items cbor2 will not emit (duplicate keys,
    indefinite lengths)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _write_raw(encoder: cbor2.CBOREncoder, value: Raw) -> None:
    encoder.write(value.data)


def dumps_with_raw(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True, default=_write_raw)


def _record_payload(records: list[Any]) -> bytes:
    """A bin report whose records may include `Raw` items."""
    return dumps_with_raw({1: 1, 2: 3, 3: 17, 4: 1764345600, 6: records})


def _first_cobs_failure(encoded: bytes) -> int:
    """The smallest cut of `encoded` (from 8 on) that is not valid COBS by itself."""
    for cut in range(8, len(encoded)):
        try:
            cobs.decode(encoded[:cut])
        except cobs.DecodeError:
            return cut
    raise AssertionError("no invalid cut")


def invalid_cases() -> list[dict[str, Any]]:
    dev = "bin-0042"
    good_payload = report_payload(BIN_REPORT)
    good = seal(dev, good_payload)
    protected = protected_header(dev.encode())
    good_tag = mac_tag(device_key(dev), protected, good_payload)

    def signed(payload: bytes) -> bytes:
        return seal(dev, payload)

    def records(*recs: dict[str, Any]) -> bytes:
        return report_payload(_replace(BIN_REPORT, records=list(recs)))

    cases: list[dict[str, Any]] = []

    # -- stage 1/2: size and serial framing
    bad_crc = frame(good, crc=crc16(good) ^ 0x0001)
    cases.append(_serial("serial_bad_crc", "valid COSE, CRC low bit flipped", dev, bad_crc, "bad_crc", "framing: CRC"))
    encoded = frame(good)[:-1]
    truncated = encoded[:-5]
    cut = _first_cobs_failure(encoded)
    for body in (truncated, encoded[:cut]):
        try:
            cobs.decode(body)
            raise AssertionError("COBS vector decodes")
        except cobs.DecodeError:
            pass
    cases.append(
        _serial(
            "serial_truncated_cobs",
            "frame cut short: the last COBS code byte points past the end of the frame",
            dev,
            truncated + b"\x00",
            "bad_cobs",
            "framing: COBS",
        )
    )
    cases.append(
        _serial(
            "serial_zero_inside",
            "a 00 byte replaces a data byte inside a COBS block, so the frame before it is cut short",
            dev,
            encoded[:cut] + b"\x00" + encoded[cut + 1 :] + b"\x00",
            "bad_cobs",
            "framing: COBS",
        )
    )
    # 1025 bytes exactly: one past the limit. Its frame body (1028 bytes) is within the COBS bound, so
    # the size check after COBS decoding is the one that fires.
    big_records = [{"n": "fill", "v": 100}] * 80 + [{"n": "fill", "v": 1}] * 20
    big = seal(dev, report_payload(_replace(BIN_REPORT, records=big_records)))
    assert len(big) == MAX_MESSAGE + 1, len(big)
    cases.append(
        _serial(
            "serial_oversized",
            f"a correctly framed {len(big)}-byte message (limit {MAX_MESSAGE}); the frame exceeds the COBS bound",
            dev,
            frame(big),
            "too_large",
            "size",
        )
    )
    cases.append(
        _mqtt(
            "mqtt_oversized",
            f"a {len(big)}-byte COSE message (limit {MAX_MESSAGE}), checked before any decoding",
            dev,
            big,
            "too_large",
            "size",
        )
    )

    # -- stage 3/4: envelope
    cases.append(
        _mqtt(
            "cose_truncated",
            "COSE message cut in the middle of the payload bstr",
            dev,
            good[:40],
            "bad_cbor",
            "envelope CBOR",
        )
    )
    cases.append(
        _mqtt(
            "cose_trailing_bytes",
            "a valid COSE message followed by one extra byte",
            dev,
            good + b"\x00",
            "bad_cbor",
            "envelope CBOR",
        )
    )
    deep = dumps(cbor2.CBORTag(COSE_MAC0, [protected, {1: [[[0]]]}, good_payload, good_tag]))
    cases.append(
        _mqtt(
            "cose_too_deep",
            "unprotected header holding nested arrays: tag, array, map, 3 arrays = 6 levels > 4",
            dev,
            deep,
            "too_deep",
            "envelope nesting",
        )
    )
    cases.append(
        _mqtt(
            "cose_wrong_tag",
            "tag 18 (COSE_Sign1) instead of 17 (COSE_Mac0)",
            dev,
            cose(protected, good_payload, good_tag, tag_number=18),
            "bad_cose",
            "envelope shape",
        )
    )
    cases.append(
        _mqtt(
            "cose_untagged",
            "the COSE_Mac0 array without its tag 17",
            dev,
            dumps([protected, {}, good_payload, good_tag]),
            "bad_cose",
            "envelope shape",
        )
    )
    cases.append(
        _mqtt(
            "cose_array_of_3",
            "tag 17 around [protected, unprotected, payload]: the MAC tag is missing",
            dev,
            dumps(cbor2.CBORTag(COSE_MAC0, [protected, {}, good_payload])),
            "bad_cose",
            "envelope shape",
        )
    )
    alg5 = protected_header(dev.encode(), alg=5)
    cases.append(
        _mqtt(
            "cose_alg_not_4",
            "alg 5 (HMAC 256/256) with a correct 8-byte tag over that header",
            dev,
            cose(alg5, good_payload, mac_tag(device_key(dev), alg5, good_payload)),
            "bad_cose",
            "envelope shape",
        )
    )
    no_kid = dumps({1: ALG_HMAC_256_64})
    cases.append(
        _mqtt(
            "cose_kid_missing",
            "protected header {1: 4} without a kid",
            dev,
            cose(no_kid, good_payload, mac_tag(device_key(dev), no_kid, good_payload)),
            "bad_cose",
            "envelope shape",
        )
    )
    bad_kid = protected_header(b"Bin_0042")
    cases.append(
        _mqtt(
            "cose_kid_not_device_id",
            "kid 'Bin_0042' breaks the device id rule (1..32 of [a-z0-9-])",
            dev,
            cose(bad_kid, good_payload, mac_tag(device_key(dev), bad_kid, good_payload)),
            "bad_cose",
            "envelope shape",
        )
    )
    cases.append(
        _mqtt(
            "cose_tag_7_bytes",
            "MAC tag bstr of 7 bytes instead of 8",
            dev,
            cose(protected, good_payload, good_tag[:7]),
            "bad_cose",
            "envelope shape",
        )
    )

    # -- stage 5/6/7: identity and MAC
    cases.append(
        _mqtt(
            "mqtt_kid_mismatch",
            "a correct message from bin-0042 published on bin-0043's topic",
            "bin-0043",
            good,
            "kid_mismatch",
            "kid vs topic",
        )
    )
    stranger = "bin-9999"
    cases.append(
        _mqtt(
            "unknown_device",
            "kid bin-9999 is not in devices.json (signed with its would-be fake key)",
            stranger,
            seal(stranger, good_payload),
            "unknown_device",
            "registry",
        )
    )
    flipped = bytes([good_tag[0] ^ 0x80]) + good_tag[1:]
    cases.append(
        _mqtt("bad_tag", "MAC tag with its first bit flipped", dev, cose(protected, good_payload, flipped), "bad_tag", "MAC")
    )
    cases.append(
        _mqtt(
            "bad_tag_other_key",
            "bin-0042's kid, tagged with bin-0043's key",
            dev,
            seal(dev, good_payload, key=device_key("bin-0043")),
            "bad_tag",
            "MAC",
        )
    )
    cases.append(
        _serial(
            "serial_bad_tag",
            "framing fine, MAC tag flipped (serial link, so no topic check)",
            dev,
            frame(cose(protected, good_payload, flipped)),
            "bad_tag",
            "MAC",
        )
    )

    # -- stage 8: payload CBOR and limits (MAC valid)
    cases.append(
        _mqtt(
            "payload_too_deep",
            "report map > records array > record map > value array > array: 5 levels > 4",
            dev,
            signed(_record_payload([{0: "fill", 2: [[42]]}])),
            "too_deep",
            "payload nesting",
        )
    )
    cases.append(
        _mqtt(
            "payload_truncated",
            "payload CBOR cut short (declares 4 records, holds fewer bytes)",
            dev,
            signed(good_payload[:-6]),
            "bad_cbor",
            "payload CBOR",
        )
    )
    indefinite = _record_payload([Raw(b"\xbf\x00\x64fill\x02\x18\x2a\xff")])
    cases.append(
        _mqtt(
            "payload_indefinite",
            "a record encoded as an indefinite-length map (forbidden)",
            dev,
            signed(indefinite),
            "bad_cbor",
            "payload CBOR",
        )
    )
    duplicate = _record_payload([Raw(b"\xa2\x00\x64fill\x00\x64dist")])
    cases.append(
        _mqtt(
            "payload_duplicate_key",
            "a record map with the name label twice",
            dev,
            signed(duplicate),
            "bad_cbor",
            "payload CBOR",
        )
    )
    cases.append(
        _mqtt(
            "payload_trailing_bytes",
            "a valid report map followed by one extra byte inside the payload bstr",
            dev,
            signed(good_payload + b"\x01"),
            "bad_cbor",
            "payload CBOR",
        )
    )
    cases.append(
        _mqtt(
            "payload_text_too_long",
            "alarm vs of 65 bytes (limit 64)",
            dev,
            signed(records({"n": "alarm", "vs": "x" * 65})),
            "too_large",
            "payload limits",
        )
    )
    cases.append(
        _mqtt(
            "payload_33_records",
            "33 records (limit 32)",
            dev,
            signed(records(*[{"n": "fill", "v": i} for i in range(33)])),
            "too_large",
            "payload limits",
        )
    )

    # -- stage 9: version, shape and types
    cases.append(
        _mqtt(
            "report_version_2",
            "version 2",
            dev,
            signed(report_payload(_replace(BIN_REPORT, version=2))),
            "bad_version",
            "version",
        )
    )
    cases.append(
        _mqtt(
            "report_record_no_name",
            "a record with a value and no name (no base name either)",
            dev,
            signed(_record_payload([{0: "fill", 2: 42}, {2: 42}])),
            "bad_report",
            "report shape",
        )
    )
    cases.append(
        _mqtt(
            "report_seq_text",
            "seq sent as the text '17'",
            dev,
            signed(report_payload(_replace(BIN_REPORT, seq="17"))),
            "bad_report",
            "report types",
        )
    )
    cases.append(
        _mqtt(
            "report_boot_zero",
            "boot 0 (boot counts from 1)",
            dev,
            signed(report_payload(_replace(BIN_REPORT, boot=0))),
            "bad_report",
            "report values",
        )
    )
    cases.append(
        _mqtt(
            "report_v_and_vs",
            "a record with both v and vs",
            dev,
            signed(records({"n": "fill", "v": 42, "vs": "42"})),
            "bad_report",
            "report shape",
        )
    )
    cases.append(
        _mqtt(
            "report_nan",
            "temp value NaN (float16 7e00)",
            dev,
            signed(records({"n": "temp", "v": math.nan})),
            "bad_report",
            "report values",
        )
    )
    cases.append(
        _mqtt(
            "report_no_time_no_uptime",
            "neither time nor uptime",
            dev,
            signed(report_payload(_replace(BIN_REPORT, time=None))),
            "bad_report",
            "report shape",
        )
    )
    cases.append(
        _mqtt(
            "payload_tag_inside",
            "time wrapped in CBOR tag 1 (epoch date/time): a payload holds no tags, and none is ever "
            "interpreted",
            dev,
            signed(dumps({**report_map(BIN_REPORT), 4: cbor2.CBORTag(1, BIN_REPORT["time"])})),
            "bad_cbor",
            "payload CBOR",
        )
    )
    cases.append(
        _mqtt(
            "report_unknown_alarm",
            "alarm vs 'smoke' is not one of the device alarms",
            dev,
            signed(records({"n": "alarm", "vs": "smoke"})),
            "bad_report",
            "report values",
        )
    )
    cases.append(
        _mqtt(
            "report_not_a_map",
            "payload is a CBOR array",
            dev,
            signed(dumps([1, 3, 17])),
            "bad_report",
            "report shape",
        )
    )

    # -- commands (gateway to device; the device checks the same order)
    def command(meaning: dict[str, Any]) -> bytes:
        return signed(command_payload(meaning))

    cases.append(
        _mqtt(
            "command_unknown_op",
            "op 'selfdestruct' is not a command",
            dev,
            command({"version": 1, "cid": 10, "op": "selfdestruct", "args": {}}),
            "bad_command",
            "command shape",
            kind="command",
        )
    )
    cases.append(
        _mqtt(
            "command_ack_seq_text",
            "ack whose seq is text",
            dev,
            signed(dumps({1: 1, 10: 11, 11: "ack", 12: {2: 3, 3: "17"}})),
            "bad_command",
            "command types",
            kind="command",
        )
    )
    cases.append(
        _mqtt(
            "command_version_2",
            "command version 2",
            dev,
            command({"version": 2, "cid": 12, "op": "ping", "args": {}}),
            "bad_version",
            "version",
            kind="command",
        )
    )
    cases.append(
        _mqtt(
            "command_bad_tag",
            "ping with its MAC tag flipped",
            dev,
            cose(protected, command_payload({"version": 1, "cid": 13, "op": "ping", "args": {}}), flipped),
            "bad_tag",
            "MAC",
            kind="command",
        )
    )
    cases.append(
        _mqtt(
            "command_no_args",
            "ping without the args map (args is always present)",
            dev,
            signed(dumps({1: 1, 10: 14, 11: "ping"})),
            "bad_command",
            "command shape",
            kind="command",
        )
    )
    return cases


# ------------------------------------------------------------------------------------------- output


def units_table() -> dict[str, Any]:
    return {
        "note": "default unit (SenML RFC 8428 / RFC 8798 secondary units) and value kind per name; "
        "the unit is omitted on the wire and written out upstream",
        "names": {name: {"unit": unit, "kind": kind} for name, (unit, kind) in UNITS.items()},
        "alarms": {"device": DEVICE_ALARMS, "gateway": GATEWAY_ALARMS},
    }


def devices_table() -> dict[str, Any]:
    return {
        "note": "fake test keys: sha256(b'KERBLINE FAKE TEST KEY ' + id); never provision them",
        "devices": [{**d, "key": device_key(d["id"]).hex(), "note": "fake test key"} for d in DEVICES],
    }


def all_files() -> dict[str, Any]:
    """Relative path -> JSON document, for every vector file."""
    files: dict[str, Any] = {"devices.json": devices_table(), "units.json": units_table()}
    for name, desc, device, meaning in VALID_REPORTS:
        files[f"valid/{name}.json"] = valid_case(name, desc, "report", device, meaning)
    for name, desc, device, meaning in VALID_COMMANDS:
        files[f"valid/{name}.json"] = valid_case(name, desc, "command", device, meaning)
    for case in invalid_cases():
        files[f"invalid/{case['name']}.json"] = case
    return files


def render(doc: Any) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write(outdir: Path) -> list[Path]:
    written = []
    for rel, doc in all_files().items():
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(doc))
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for written_path in write(target):
        print(written_path)
