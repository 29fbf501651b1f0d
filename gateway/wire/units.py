"""Default unit and value kind of every measurement name (mirrors tests/vectors/units.json; a test
holds them equal).

Units are SenML primary units (RFC 8428 registry) or RFC 8798 secondary units. A device leaves `u` out
when it is the default, and the gateway writes it out upstream, so the table is part of the contract.
Kinds: "v" numeric, "vb" boolean, "vs" text.
"""
from __future__ import annotations

from typing import NamedTuple


class Measurement(NamedTuple):
    unit: str | None
    kind: str


MEASUREMENTS: dict[str, Measurement] = {
    "fill": Measurement("/100", "v"),
    "dist": Measurement("mm", "v"),
    "temp": Measurement("Cel", "v"),
    "batt": Measurement("mV", "v"),
    "tilt": Measurement(None, "vb"),
    "lid": Measurement(None, "vb"),
    "lux": Measurement("lx", "v"),
    "lamp": Measurement(None, "vb"),
    "dim": Measurement("/100", "v"),
    "power": Measurement("W", "v"),
    "volt": Measurement("V", "v"),
    "curr": Measurement("mA", "v"),
    "energy": Measurement("Wh", "v"),
    "rssi": Measurement("dBm", "v"),
    "heap": Measurement("B", "v"),
    "queue": Measurement("count", "v"),
    "uptime": Measurement("s", "v"),
    "alarm": Measurement(None, "vs"),
    "fault": Measurement(None, "vs"),  # safe mode: why the device is there, at most 64 bytes
}

ALARM = "alarm"
# Values of an `alarm` record a device may send; `offline` is raised by the gateway alone.
DEVICE_ALARMS = frozenset({"full", "fire", "tilt", "lowbatt", "lamp_fail", "sensor_fault"})
GATEWAY_ALARMS = frozenset({"offline"})
