"""Changing the device registry file safely: add an entry, replace a key; atomic, locked, checked.

The gateway re-reads the registry whenever the file changes, so a half-written or wrong file would
refuse every device at once. Every change here is made on a copy, parsed back with the gateway's own
`gateway.registry.parse_registry`, compared with what was intended, and only then renamed over the old
file (fsync'd first, mode and owner kept): the gateway sees the old registry or the new one, never a mix.
Two technicians adding devices to one file at the same time are serialised by an flock on
`<registry>.lock`.

A TOML registry is edited as text so the technician's comments and layout stay: a new device is
appended as its own `[devices.ID]` table, a new key replaces the value on that table's `key = "..."`
line. A JSON registry is rewritten whole (JSON has no comments to keep).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

from gateway.registry import Device, RegistryError, parse_registry, read_registry
from gateway.tools.steps import StepError

NEW_FILE_MODE = 0o640  # it holds keys: root and the gateway's group only (docs/operations.md)


def read_devices(path: Path) -> dict[str, Device]:
    """The registry's devices; an absent file is an empty registry; a bad one is a StepError."""
    if not path.exists():
        return {}
    try:
        return read_registry(path)
    except RegistryError as exc:
        raise StepError(f"the registry is not valid: {exc}",
                        f"fix {path} by hand (or restore it from its backup); the gateway is still "
                        "running on the last good version") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the registry for one read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def add_entry(path: Path, device_id: str, entry: dict[str, Any]) -> None:
    """Add one device (entry holds kind, key and the optional fields); refuses an id already there."""
    with locked(path):
        before = read_devices(path)
        if device_id in before:
            raise StepError(f"{device_id} is already in the registry {path}",
                            f"pick another id, or re-flash it with `kerbline device flash {device_id} --port PORT`")
        if path.suffix == ".json":
            data = _json_document(path)
            data.setdefault("devices", {})[device_id] = entry
            text = json.dumps(data, indent=2) + "\n"
        else:
            old = path.read_text("utf-8") if path.exists() else ""
            text = old + ("\n" if old and not old.endswith("\n") else "") + _toml_table(device_id, entry)
        expected = {**{d: _shape(v) for d, v in before.items()}, device_id: _entry_shape(device_id, entry)}
        _check_and_replace(path, text, expected)


def set_key(path: Path, device_id: str, key_hex: str) -> None:
    """Replace one device's key, leaving everything else in the file as it was."""
    with locked(path):
        before = read_devices(path)
        if device_id not in before:
            raise StepError(f"{device_id} is not in the registry {path}",
                            f"add it first: kerbline device add {device_id} --kind bin|light")
        if path.suffix == ".json":
            data = _json_document(path)
            data["devices"][device_id]["key"] = key_hex
            text = json.dumps(data, indent=2) + "\n"
        else:
            text = _toml_replace_key(path.read_text("utf-8"), device_id, key_hex, path)
        expected = {d: _shape(v) for d, v in before.items()}
        expected[device_id] = {**expected[device_id], "key": bytes.fromhex(key_hex)}
        _check_and_replace(path, text, expected)


def _json_document(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"devices": {}}
    data: dict[str, Any] = json.loads(path.read_bytes())  # already parsed once by read_devices
    return data


def _toml_table(device_id: str, entry: dict[str, Any]) -> str:
    lines = [f"[devices.{device_id}]"]
    for name, value in entry.items():
        if isinstance(value, str):
            lines.append(f"{name} = {json.dumps(value)}")  # JSON string escapes are valid TOML basic strings
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"{name} = {value!r}")
        else:
            raise TypeError(f"registry field {name}: unsupported value type {type(value).__name__}")
    return "\n".join(lines) + "\n"


_KEY_LINE = re.compile(r'^(\s*key\s*=\s*)"[0-9A-Fa-f]*"(\s*(#.*)?)$')


def _toml_replace_key(text: str, device_id: str, key_hex: str, path: Path) -> str:
    header = re.compile(r'^\s*\[\s*devices\s*\.\s*"?' + re.escape(device_id) + r'"?\s*\]\s*(#.*)?$')
    lines = text.splitlines(keepends=True)
    inside = False
    for i, line in enumerate(lines):
        stripped = line.rstrip("\r\n")
        if stripped.lstrip().startswith("["):
            inside = bool(header.match(stripped))
            continue
        match = _KEY_LINE.match(stripped) if inside else None
        if match:
            lines[i] = f'{match.group(1)}"{key_hex}"{match.group(2)}' + line[len(stripped):]
            return "".join(lines)
    raise StepError(f"cannot find the line `key = \"...\"` under [devices.{device_id}] in {path}",
                    f"write the entry as a table [devices.{device_id}] with its key on one line, then retry")


def _shape(device: Device) -> dict[str, Any]:
    """A registry entry as comparable data (the key as bytes)."""
    return {"kind": device.kind, "key": device.key.bytes, "interval_s": device.interval_s, "site": device.site,
            "lat": device.lat, "lon": device.lon, "link": device.link, "note": device.note}


def _entry_shape(device_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    return _shape(parse_registry({"devices": {device_id: entry}})[device_id])


def _check_and_replace(path: Path, text: str, expected: dict[str, dict[str, Any]]) -> None:
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        got = {d: _shape(v) for d, v in parse_registry(data, str(path)).items()}
    except (ValueError, RegistryError) as exc:
        raise StepError(f"the edited registry would not parse ({exc}); nothing was changed",
                        f"check {path} by hand for an unusual layout") from None
    if got != expected:
        raise StepError("the edited registry would not say what was intended; nothing was changed",
                        f"check {path} by hand for an unusual layout (a device defined twice?)")
    write_atomic(path, text.encode("utf-8"))


def write_atomic(path: Path, data: bytes, mode: int = NEW_FILE_MODE) -> None:
    """Write `data` to a temp file beside `path`, fsync, rename over it; an old file's mode and owner stay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, old.st_mode & 0o7777 if old else mode)
        if old is not None and os.geteuid() == 0:
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
