"""`kerbline device broker-config`: mosquitto's password and ACL files, made from the registry.

Who may do what on the broker (the wire contract's MQTT rules):
- each MQTT device logs in as its id with its key-derived password (`provision.mqtt_password`) and may
  publish only `kerbline/v1/ID/up` and `kerbline/v1/ID/state` and subscribe only `kerbline/v1/ID/down`;
- the gateway logs in with the user and password of its own config (`[mqtt] username/password`) and may
  read every device's `up` and `state` and write every device's `down`.
Serial devices (registry `link = "serial"`) never reach the broker and get no login.

The password file uses mosquitto 2's own format, PBKDF2-SHA512: `user:$7$ITERATIONS$SALT$HASH` (salt
and hash in base64), the format `mosquitto_passwd` writes; it is made here so no password ever appears
on a command line. A line whose hash already matches the password is kept as it was, so running the
command again changes nothing unless a device, key or password changed. Both files are written
atomically (a reload never reads half a file), readable by the owner and the `mosquitto` group only.
"""
from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.registry import Device
from gateway.tools.provision import mqtt_password
from gateway.tools.registry_file import read_devices, write_atomic
from gateway.tools.steps import StepError
from gateway.wire import down_topic, state_topic, up_topic

ITERATIONS = 101  # mosquitto_passwd's default
SALT_BYTES = 12
PASSWORD_FILE = "kerbline.passwd"
ACL_FILE = "kerbline.acl"
FILE_MODE = 0o640


@dataclass(frozen=True)
class BrokerFiles:
    password_file: Path
    acl_file: Path
    devices: int


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def hash_matches(stored: str, password: str) -> bool:
    """Whether a `$7$` entry (mosquitto 2's PBKDF2-SHA512) is the hash of `password`."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, digest = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]))
    return hmac.compare_digest(got, digest)


def mqtt_devices(devices: dict[str, Device]) -> list[Device]:
    return [d for _, d in sorted(devices.items()) if d.link != "serial"]


def password_text(logins: list[tuple[str, str]], old: dict[str, str]) -> str:
    lines = []
    for user, password in logins:
        stored = old.get(user)
        lines.append(f"{user}:{stored if stored and hash_matches(stored, password) else mosquitto_hash(password)}")
    return "\n".join(lines) + "\n"


def acl_text(devices: list[Device], gateway_user: str, source: Path) -> str:
    lines = [f"# Written by `kerbline device broker-config` from {source}: run it again rather than editing.",
             "# The gateway: every device's reports and state in, commands out.",
             f"user {gateway_user}",
             f"topic read {up_topic('+')}",
             f"topic read {state_topic('+')}",
             f"topic write {down_topic('+')}"]
    for device in devices:
        lines += ["", f"# {device.id}: only its own reports and state out, its own commands in.",
                  f"user {device.id}",
                  f"topic write {up_topic(device.id)}",
                  f"topic write {state_topic(device.id)}",
                  f"topic read {down_topic(device.id)}"]
    return "\n".join(lines) + "\n"


def _old_hashes(path: Path) -> dict[str, str]:
    try:
        text = path.read_text("utf-8")
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def write_broker_files(registry: Path, out_dir: Path, gateway_user: str | None,
                       gateway_password: str | None) -> BrokerFiles:
    if not gateway_user or not gateway_password:
        raise StepError("the gateway has no broker login (the broker will refuse anonymous clients)",
                        "set [mqtt] username and password in the gateway config, or give --gateway-user "
                        "and --gateway-password-file")
    all_devices = read_devices(registry)
    if gateway_user in all_devices:
        raise StepError(f"the gateway's broker user {gateway_user!r} is also a device id",
                        "give the gateway a user name that no device has (e.g. kerbline-gateway)")
    devices = mqtt_devices(all_devices)
    password_file, acl_file = out_dir / PASSWORD_FILE, out_dir / ACL_FILE
    logins = [(gateway_user, gateway_password)] + [(d.id, mqtt_password(d.key.bytes)) for d in devices]
    write_atomic(password_file, password_text(logins, _old_hashes(password_file)).encode(), FILE_MODE)
    write_atomic(acl_file, acl_text(devices, gateway_user, registry).encode(), FILE_MODE)
    _readable_by_mosquitto(password_file, acl_file)
    return BrokerFiles(password_file, acl_file, len(devices))


def _readable_by_mosquitto(*paths: Path) -> None:
    """Give the files to the `mosquitto` group when we can (root, group exists); the broker reads them."""
    if os.geteuid() != 0:
        return
    try:
        gid = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return
    for path in paths:
        os.chown(path, -1, gid)
