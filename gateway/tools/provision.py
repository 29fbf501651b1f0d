"""A device's identity and settings: the registry entry, its settings file, the `/config.json` it gets.

Two files describe a device on the technician's side:
- the gateway's registry (`gateway.registry`): id, kind, the 32-byte key, site, position, link type;
- its settings file `devices/ID.json` beside the registry: everything else its `/config.json` holds
  (link details, pins, calibration, any firmware setting) but never the key. `add` writes it with the
  reference wiring of docs/technician.md; the technician edits it (calibration, other pins) and
  `flash` writes what it says.

`device_config()` joins the two into the board's `/config.json` and checks it with the firmware's own
`kerbline.config.check`, so a config the device would refuse at boot is refused here first, naming the
setting. The bytes are deterministic (sorted keys, no spaces), so an unchanged config has an unchanged
sha256 and a re-flash does not rewrite it.

An MQTT device logs in to the broker as its id with a password derived from its key
(`mqtt_password`): nothing more to store or leak, the same on every re-flash, new with a new key, and
`broker-config` can hash it into the broker's password file from the registry alone.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from pathlib import Path
from typing import Any

from gateway.registry import KEY_BYTES, Device, Secret
from gateway.tools.registry_file import add_entry, read_devices, write_atomic
from gateway.tools.steps import StepError
from gateway.wire import is_device_id

# The reference wiring (docs/technician.md has the pictures). GPIO 34-39 are input-only ADC1 pins
# (ADC2 is unusable while WiFi runs); 26/27 are RTC pins, so the tilt and lid switches can wake the bin.
REFERENCE_PINS: dict[str, dict[str, int]] = {
    "bin": {"trig": 5, "echo": 18, "temp": 4, "batt": 34, "tilt": 26, "lid": 27},
    "light": {"scl": 22, "sda": 21, "ldr": 35, "relay": 25, "pwm": 33, "volt": 36, "curr": 39},
}
SERIAL_LINK: dict[str, Any] = {"type": "serial", "uart": 1, "baud": 115200, "tx": 17, "rx": 16}
MQTT_PORT, MQTTS_PORT = 1883, 8883
_PASSWORD_LABEL = b"kerbline/v1 mqtt password"
ID_RULE = "1 to 32 characters of a-z, 0-9 and '-', e.g. bin-0042"


def settings_path(registry: Path, device_id: str) -> Path:
    return registry.parent / "devices" / f"{device_id}.json"


def new_key() -> str:
    """A fresh random device key, 64 hex digits (never printed)."""
    return secrets.token_bytes(KEY_BYTES).hex()


def mqtt_password(key: bytes) -> str:
    """The device's broker password: 32 characters derived from its key by HMAC-SHA256."""
    digest = hmac.new(key, _PASSWORD_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def check_id(device_id: str) -> None:
    if not is_device_id(device_id):
        raise StepError(f"{device_id!r} is not a device id", f"use {ID_RULE}")


def reference_settings(kind: str, link: str, broker: str | None = None, tls: bool = False,
                       ssid: str | None = None) -> dict[str, Any]:
    """The settings file `add` writes: kind, link and the reference pins."""
    if link == "serial":
        link_spec: dict[str, Any] = dict(SERIAL_LINK)
    else:
        if not broker:
            raise StepError("an MQTT device needs its broker's address", "give --broker HOST[:PORT]")
        host, _, port = broker.rpartition(":") if ":" in broker else (broker, "", "")
        try:
            port_number = int(port) if port else (MQTTS_PORT if tls else MQTT_PORT)
        except ValueError:
            raise StepError(f"--broker {broker!r}: the port is not a number", "give --broker HOST[:PORT]") from None
        link_spec = {"type": "mqtt", "host": host, "port": port_number, "tls": tls}
        if ssid:
            link_spec["ssid"] = ssid
    return {"kind": kind, "link": link_spec, "pins": dict(REFERENCE_PINS[kind])}


def add_device(registry: Path, device_id: str, kind: str, link: str = "serial", site: str | None = None,
               lat: float | None = None, lon: float | None = None, broker: str | None = None,
               tls: bool = False, ssid: str | None = None) -> Path:
    """Register a new device with a fresh key and write its settings file; returns the settings path."""
    check_id(device_id)
    if lat is not None and not (math.isfinite(lat) and -90 <= lat <= 90):
        raise StepError(f"--lat {lat} is not a latitude", "give degrees north, -90 to 90 (e.g. 52.5200)")
    if lon is not None and not (math.isfinite(lon) and -180 <= lon <= 180):
        raise StepError(f"--lon {lon} is not a longitude", "give degrees east, -180 to 180 (e.g. 13.4050)")
    if device_id in read_devices(registry):
        raise StepError(f"{device_id} is already in the registry {registry}",
                        f"pick another id, or re-flash it with `kerbline device flash {device_id} --port PORT`")
    path = settings_path(registry, device_id)
    if path.exists():
        raise StepError(f"{path} already exists, left by an earlier device of that id",
                        "remove it (or move it away) if that device is gone, then add again")
    settings = reference_settings(kind, link, broker, tls, ssid)
    key = new_key()
    entry: dict[str, Any] = {"kind": kind, "key": key, "link": link}
    for name, value in (("site", site), ("lat", lat), ("lon", lon)):
        if value is not None:
            entry[name] = value
    device = Device(device_id, kind, Secret(bytes.fromhex(key)), site=site, lat=lat, lon=lon, link=link)
    device_config(device, settings)  # refuse now what the board would refuse at boot
    write_atomic(path, (json.dumps(settings, indent=2) + "\n").encode())
    try:
        add_entry(registry, device_id, entry)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def load_settings(registry: Path, device: Device) -> dict[str, Any]:
    """The device's settings file, checked for shape (the full check is `device_config`)."""
    path = settings_path(registry, device.id)
    try:
        settings = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StepError(f"{path} is missing (the device's link, pins and calibration)",
                        f"restore it, or write one with at least {json.dumps(reference_settings(device.kind, 'serial'))}"
                        ) from None
    except ValueError as exc:
        raise StepError(f"{path} is not valid JSON: {exc}", f"fix {path}") from None
    if not isinstance(settings, dict):
        raise StepError(f"{path} must hold a JSON object", f"fix {path}")
    for forbidden in ("id", "key"):
        if forbidden in settings:
            raise StepError(f"{path} must not hold '{forbidden}' (it comes from the registry)",
                            f"remove '{forbidden}' from {path}")
    if settings.get("kind", device.kind) != device.kind:
        raise StepError(f"{path} says kind {settings.get('kind')!r} but the registry says {device.kind!r}",
                        f"make them agree (the registry is {device.kind})")
    return settings


def device_config(device: Device, settings: dict[str, Any]) -> dict[str, Any]:
    """The board's /config.json for `device` with `settings`, checked by the firmware's own rules."""
    from kerbline import config as firmware_config  # the firmware: MicroPython, untyped

    raw: dict[str, Any] = {**settings, "id": device.id, "kind": device.kind, "key": device.key.bytes.hex()}
    link = raw.get("link")
    if isinstance(link, dict) and link.get("type") == "mqtt":
        if "password" in link:
            raise StepError("the settings file must not hold the link's password (it is derived from the key)",
                            "remove link.password from the device's settings file")
        raw["link"] = {**link, "password": mqtt_password(device.key.bytes)}
    try:
        firmware_config.check(json.loads(json.dumps(raw)))  # a copy: check() fills in defaults
    except firmware_config.ConfigError as exc:
        raise StepError(f"the device would refuse this config: {exc}",
                        "fix the device's settings file (devices/ID.json beside the registry)") from None
    return raw


def config_bytes(config: dict[str, Any]) -> bytes:
    """The exact bytes of /config.json: sorted keys, no spaces, so the same config hashes the same."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")


def describe(config: dict[str, Any]) -> str:
    """One line about a config for the progress output (no key, no password)."""
    link = config["link"]
    if link["type"] == "serial":
        where = f"serial link (UART {link.get('uart', 1)} at {link.get('baud', 115200)} baud)"
        if "pty" in link:
            where = f"serial link ({link['pty']})"
    else:
        where = f"MQTT link to {link['host']}:{link.get('port', MQTT_PORT)}{' TLS' if link.get('tls') else ''}"
    pins = ", ".join(f"{name} {gpio}" for name, gpio in sorted(config.get("pins", {}).items()))
    return f"{config['kind']}, {where}, pins: {pins or 'none'}"
