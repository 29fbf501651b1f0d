"""The simulator's own MQTT broker: a Debian mosquitto on a free loopback port, with the contract's ACLs.

The demo and the CLI start one (`Broker(workdir).start()`), write its config themselves and stop it at the
end; nothing is shared with a broker the machine may already run. The port is chosen once and kept
across `stop()`/`start()`, which is how a `broker_restart` fault is played: stop, wait the outage out on
the simulated clock, start again on the same port, with persistence on so the gateway's session and
its queued reports survive, as on a production broker.

Access control (`acl=True`): the contract's rule that a device may publish only its own `up` and `state`
and subscribe only its own `down` is the broker's ACL with the user name = device id (`pattern` lines);
the gateway user may read every device's `up` and `state` and write every `down`; an optional fleet
user may publish any device's `up` (the load generator's shared connections, see docs/simulator.md).
With `passwords`, anonymous clients are refused and each user needs its password (mosquitto_passwd
hashes the file); without, anonymous clients are let in and the ACL still applies by user name.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
HOST = "127.0.0.1"
GATEWAY_USER = "kerbline-gateway"
FLEET_USER = "kerbline-fleet"
START_TIMEOUT_S = 10.0
MAX_QUEUED = 500_000
STOP_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """mosquitto could not be started (the message carries the end of its log)."""


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """One mosquitto process and its files (`mosquitto.conf`, `acl`, `passwd`, `mosquitto.log`, `data/`)
    in `workdir`."""

    def __init__(self, workdir: str | os.PathLike[str], *, port: int | None = None, acl: bool = True,
                 passwords: Mapping[str, str] | None = None, fleet_user: bool = False) -> None:
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config(acl, passwords, fleet_user)

    def _write_config(self, acl: bool, passwords: Mapping[str, str] | None, fleet_user: bool) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, mosquitto would switch to an unprivileged user
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if passwords else 'true'}",
            "persistence true",
            f"persistence_location {data}/",
            "set_tcp_nodelay true",
            # messages queued for a client that is behind (the gateway under fleet load): bounded, and far
            # above the default 1000, which a 10,000 reports/s fleet fills in a tenth of a second
            f"max_queued_messages {MAX_QUEUED}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if acl:
            acl_path = self.workdir / "acl"
            rules = [
                "# every device: its own topics only (user name = device id)",
                "pattern write kerbline/v1/%u/up",
                "pattern write kerbline/v1/%u/state",
                "pattern read kerbline/v1/%u/down",
                f"user {GATEWAY_USER}",
                "topic read kerbline/v1/+/up",
                "topic read kerbline/v1/+/state",
                "topic write kerbline/v1/+/down",
            ]
            if fleet_user:
                rules += [f"user {FLEET_USER}", "topic write kerbline/v1/+/up", "topic write kerbline/v1/+/state"]
            acl_path.write_text("\n".join(rules) + "\n")
            lines.append(f"acl_file {acl_path}")
        if passwords:
            passwd = self.workdir / "passwd"
            passwd.write_text("".join(f"{user}:{secret}\n" for user, secret in passwords.items()))
            passwd.chmod(0o600)
            result = subprocess.run([str(MOSQUITTO_PASSWD), "-U", str(passwd)], capture_output=True, text=True)
            if result.returncode != 0:
                raise BrokerError(f"mosquitto_passwd -U failed: {result.stderr.strip() or result.stdout.strip()}")
            lines.append(f"password_file {passwd}")
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start mosquitto and return once it accepts connections."""
        if self.running:
            return
        if not MOSQUITTO.exists():
            raise BrokerError(f"{MOSQUITTO} is missing: run scripts/bootstrap.sh (Debian package mosquitto)")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise BrokerError(f"mosquitto exited ({code}) before listening on {self.port}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (mosquitto saves its sessions and queued messages), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart_down(self) -> None:
        """The first half of a restart: the broker goes away (`start()` brings it back)."""
        self.restarts += 1
        self.stop()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
