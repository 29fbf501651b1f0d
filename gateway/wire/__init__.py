"""The Kerbline wire contract, gateway side (CPython, cbor2, the `cobs` package, hmac).

Public surface:
- `Reason`, `Rejected(reason, detail)`: the closed set of refusal reasons; every decoder raises only
  `Rejected` for bad input.
- Serial link: `FrameDecoder().feed(chunk) -> list[bytes | Rejected]` (stream to messages),
  `decode_frame(body)`, `encode_frame(message)`, `MAX_FRAME`.
- Messages: `decode_serial_report(message, lookup_key) -> Report`,
  `decode_mqtt_report(message, topic, lookup_key) -> Report`,
  `seal_command(device_id, key, command) -> bytes`. `lookup_key(device_id)` returns the 32-byte key
  or None for an unregistered device.
- Pieces: `verify(message, lookup_key, expected_device) -> (device_id, payload)`,
  `build(device_id, key, payload)`, `parse_report(payload, device)`, `parse_command(payload)`,
  `encode_command(command)`.
- Types: `Report`, `Reading`, `Command`; `MEASUREMENTS` (default unit and kind per name),
  `DEVICE_ALARMS`, `GATEWAY_ALARMS`.
- Ids and topics: `is_device_id`, `device_from_topic`, `up_topic`, `down_topic`, `state_topic`.
- Limits: `MAX_MESSAGE` (1024), `MAX_RECORDS` (32), `MAX_TEXT` (64), `MAX_DEPTH` (4).

Checks run in the order given in docs/architecture.md; the first failing check names the reason.
"""
from gateway.wire.cbor_limits import MAX_DEPTH, MAX_TEXT
from gateway.wire.cose import MAX_MESSAGE, KeyLookup, build, verify
from gateway.wire.framing import MAX_FRAME, FrameDecoder, decode_frame, encode_frame
from gateway.wire.identity import device_from_topic, down_topic, is_device_id, state_topic, up_topic
from gateway.wire.messages import decode_mqtt_report, decode_serial_report, seal_command
from gateway.wire.model import MAX_RECORDS, Command, Reading, Report, encode_command, parse_command, parse_report
from gateway.wire.reasons import Reason, Rejected
from gateway.wire.units import DEVICE_ALARMS, GATEWAY_ALARMS, MEASUREMENTS, Measurement

__all__ = [
    "DEVICE_ALARMS",
    "GATEWAY_ALARMS",
    "MAX_DEPTH",
    "MAX_FRAME",
    "MAX_MESSAGE",
    "MAX_RECORDS",
    "MAX_TEXT",
    "MEASUREMENTS",
    "Command",
    "FrameDecoder",
    "KeyLookup",
    "Measurement",
    "Reading",
    "Reason",
    "Rejected",
    "Report",
    "build",
    "decode_frame",
    "decode_mqtt_report",
    "decode_serial_report",
    "device_from_topic",
    "down_topic",
    "encode_command",
    "encode_frame",
    "is_device_id",
    "parse_command",
    "parse_report",
    "seal_command",
    "state_topic",
    "up_topic",
    "verify",
]
