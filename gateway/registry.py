"""The device registry: which devices exist, their kind and their 32-byte secret key.

The technician's tools write it (`kerbline device add`); the gateway reads it and re-reads it when it
changes, so a newly provisioned device is accepted without a restart. TOML or JSON, by file extension:

    # registry.toml                              # registry.json
    [devices.bin-0042]                           {"devices": {"bin-0042": {
    kind = "bin"                                    "kind": "bin", "key": "cd12...b1eb",
    key = "cd12...b1eb"        # 64 hex digits       "interval_s": 900}}}
    interval_s = 900           # optional
    site = "Market St 4"       # optional: site, lat, lon, link are kept for the tools

Keys never leave this module as text: a `Secret` prints as `<key>`, in reprs, logs and tracebacks alike.
A file that fails to parse is refused whole, with the entry and field at fault named; on a reload the
previous registry stays in force and the error is reported (health, log), never half applied.
"""
from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gateway.wire import is_device_id

KEY_BYTES = 32
KINDS = ("bin", "light")
_OPTIONAL_TEXT = ("site", "link", "note")
_KNOWN = frozenset({"kind", "key", "interval_s", "lat", "lon", *_OPTIONAL_TEXT})


class RegistryError(ValueError):
    """The registry file is unreadable or an entry is wrong; the message names the entry and field."""


class Secret:
    """A device key. Only `bytes` gives the key; every way of printing it gives `<key>`."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    @property
    def bytes(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "<key>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Device:
    """One registry entry. `interval_s` None: the config's default interval applies."""

    id: str
    kind: str
    key: Secret = field(repr=False)
    interval_s: float | None = None
    site: str | None = None
    lat: float | None = None
    lon: float | None = None
    link: str | None = None
    note: str | None = None

    def public(self) -> dict[str, Any]:
        """The entry without its key, as the HTTP API shows it."""
        return {"id": self.id, "kind": self.kind, "interval_s": self.interval_s, "site": self.site,
                "lat": self.lat, "lon": self.lon, "link": self.link}


def parse_registry(data: Any, source: str = "registry") -> dict[str, Device]:
    """The devices in a parsed registry document, or RegistryError naming what is wrong."""
    if not isinstance(data, dict) or set(data) - {"devices"}:
        raise RegistryError(f"{source}: must hold one table `devices` (device id -> entry)")
    entries = data.get("devices", {})
    if not isinstance(entries, dict):
        raise RegistryError(f"{source}: `devices` must be a table of device id -> entry")
    return {device_id: _entry(device_id, entry, source) for device_id, entry in entries.items()}


def _entry(device_id: str, entry: Any, source: str) -> Device:
    where = f"{source}: devices.{device_id}"
    if not is_device_id(device_id):
        raise RegistryError(f"{where}: not a device id (1 to 32 of a-z, 0-9, '-')")
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: must be a table")
    unknown = set(entry) - _KNOWN
    if unknown:
        raise RegistryError(f"{where}.{sorted(unknown)[0]}: unknown field (known: {', '.join(sorted(_KNOWN))})")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise RegistryError(f"{where}.kind: must be one of {', '.join(KINDS)}")
    key_text = entry.get("key")
    try:
        key = bytes.fromhex(key_text) if isinstance(key_text, str) else b""
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        # The value itself is never echoed: it may be a real key with one digit wrong.
        raise RegistryError(f"{where}.key: must be {KEY_BYTES * 2} hex digits")
    interval = entry.get("interval_s")
    if interval is not None and not (type(interval) in (int, float) and math.isfinite(interval) and interval > 0):
        raise RegistryError(f"{where}.interval_s: must be a positive number of seconds")
    for name in ("lat", "lon"):
        value = entry.get(name)
        if value is not None and not (type(value) in (int, float) and math.isfinite(value)):
            raise RegistryError(f"{where}.{name}: must be a number")
    for name in _OPTIONAL_TEXT:
        value = entry.get(name)
        if value is not None and not isinstance(value, str):
            raise RegistryError(f"{where}.{name}: must be a string")
    return Device(device_id, kind, Secret(key), None if interval is None else float(interval), entry.get("site"),
                  _float(entry.get("lat")), _float(entry.get("lon")), entry.get("link"), entry.get("note"))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def read_registry(path: Path) -> dict[str, Device]:
    """Read and check the registry file (TOML unless its name ends in .json)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        # tomllib/json errors quote positions, not values, so no key text can leak through them.
        raise RegistryError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    return parse_registry(data, str(path))


class Registry:
    """The registry in force, reloaded from its file when the file changes.

    `key(device_id)` is the `lookup_key` the wire decoders take: the key bytes, or None when the device
    is not registered. A missing file is an empty registry (every report is then `unknown_device`),
    so a fresh demo install starts; it is reported in `error`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.devices: dict[str, Device] = {}
        self._keys: dict[str, bytes] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.error: str | None = None
        self.loads = 0

    def key(self, device_id: str) -> bytes | None:
        return self._keys.get(device_id)

    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def __len__(self) -> int:
        return len(self.devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.devices

    def load(self) -> None:
        """Read the file now; RegistryError leaves the registry in force as it was."""
        stamp = self._file_stamp()
        if stamp is None:
            self._set({})
            self.error = f"{self.path}: no such file (no device is registered)"
            self._stamp = None
            return
        devices = read_registry(self.path)
        self._set(devices)
        self._stamp = stamp
        self.error = None

    def reload_if_changed(self) -> bool:
        """Re-read the file if its size, mtime or inode changed; True when a new registry is in force.

        A bad file raises RegistryError (and is remembered in `error`); the old registry stays.
        """
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        try:
            self.load()
        except RegistryError as exc:
            self._stamp = stamp  # do not re-read (and re-report) the same bad file every check
            self.error = str(exc)
            raise
        return True

    def _set(self, devices: Mapping[str, Device]) -> None:
        self.devices = dict(devices)
        self._keys = {device_id: d.key.bytes for device_id, d in devices.items()}
        self.loads += 1

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns
