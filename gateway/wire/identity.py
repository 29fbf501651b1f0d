"""Device ids and the MQTT topics named after them.

A device id is 1 to 32 characters of [a-z0-9-] (protocol.md). It is the COSE kid, the MQTT client id and
user name, and a topic level, so one rule, checked in one place, keeps all of those safe to use as
labels, file names and SQL values.
"""
from __future__ import annotations

import re

MAX_DEVICE_ID = 32
_DEVICE_ID = re.compile(r"[a-z0-9-]{1,32}")
_DEVICE_ID_BYTES = re.compile(rb"[a-z0-9-]{1,32}")
TOPIC_ROOT = "kerbline/v1"


def is_device_id(value: str) -> bool:
    return _DEVICE_ID.fullmatch(value) is not None


def device_id_from_kid(kid: bytes) -> str | None:
    """The device id a COSE kid names, or None when the kid breaks the rule."""
    if _DEVICE_ID_BYTES.fullmatch(kid) is None:
        return None
    return kid.decode("ascii")


def up_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/up"


def down_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/down"


def state_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/state"


def device_from_topic(topic: str, leaf: str = "up") -> str:
    """The device level of `kerbline/v1/{dev}/{leaf}`, or "" when the topic is not of that form.

    "" never equals a kid, so a message on a foreign topic fails the kid check (`kid_mismatch`) after
    the envelope checks, in the documented order.
    """
    parts = topic.split("/")
    if len(parts) != 4 or parts[3] != leaf or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        return ""
    return parts[2]
