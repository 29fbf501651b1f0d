"""The receiver's whole path for one message, per link: the only calls the ingest side needs.

Serial: the kid alone names the sender. MQTT: the topic's device must be the kid (a device may only
publish on its own topic, and the broker's ACL is not trusted to be the only guard).
"""
from __future__ import annotations

from gateway.wire.cose import KeyLookup, build, verify
from gateway.wire.identity import device_from_topic
from gateway.wire.model import Command, Report, encode_command, parse_report


def decode_serial_report(message: bytes, lookup_key: KeyLookup) -> Report:
    """A report message from the serial link (already out of its frame), or Rejected."""
    device_id, payload = verify(message, lookup_key)
    return parse_report(payload, device_id)


def decode_mqtt_report(message: bytes, topic: str, lookup_key: KeyLookup) -> Report:
    """A report published on `topic` (kerbline/v1/{dev}/up), or Rejected."""
    device_id, payload = verify(message, lookup_key, device_from_topic(topic))
    return parse_report(payload, device_id)


def seal_command(device_id: str, key: bytes, command: Command) -> bytes:
    """The COSE message carrying `command` to `device_id`; ValueError if the device would refuse it."""
    return build(device_id, key, encode_command(command))
