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
    """A TCP port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoProcess:
    """One mosquitto process and its files in `workdir`: the config (written by a subclass, from
    `base_config()` plus its own lines), the log (stderr, appended across restarts) and the process.

    The port is chosen once and kept across `stop()`/`start()`, so clients reconnect to the same
    address after a restart. The simulator's `Broker` and the tests' broker fixture are both this.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, port: int | None = None,
                 binary: str | os.PathLike[str] = MOSQUITTO) -> None:
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.binary = Path(binary)
        self._proc: subprocess.Popen[bytes] | None = None

    def base_config(self) -> list[str]:
        """The lines every broker here starts with: our listener, our user, logs on stderr."""
        return [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, mosquitto would switch to an unprivileged user
            f"listener {self.port} {self.host}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start mosquitto and return once it accepts connections; BrokerError (with its log) if not."""
        if self.running:
            return
        if not self.binary.exists():
            raise BrokerError(f"{self.binary} is missing: run scripts/bootstrap.sh "
                              "(Debian package mosquitto: sudo apt-get install mosquitto)")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([str(self.binary), "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not port_accepts(self.host, self.port):
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise BrokerError(f"mosquitto exited ({code}) before listening on {self.host}:{self.port}; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
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

    def kill(self) -> None:
        """Crash the broker (SIGKILL): nothing is saved, clients see the connection drop."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}:{self.port}, running={self.running}, log={self.log_path})"


class Broker(MosquittoProcess):
    """The simulator's broker: persistence on, the contract's ACLs, optional passwords; files
    (`mosquitto.conf`, `acl`, `passwd`, `mosquitto.log`, `data/`) in `workdir`."""

    def __init__(self, workdir: str | os.PathLike[str], *, port: int | None = None, acl: bool = True,
                 passwords: Mapping[str, str] | None = None, fleet_user: bool = False) -> None:
        super().__init__(workdir, port=port)
        self.restarts = 0
        self._write_config(acl, passwords, fleet_user)

    def _write_config(self, acl: bool, passwords: Mapping[str, str] | None, fleet_user: bool) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = self.base_config() + [
            f"allow_anonymous {'false' if passwords else 'true'}",
            "persistence true",
            f"persistence_location {data}/",
            "set_tcp_nodelay true",
            # messages queued for a client that is behind (the gateway under fleet load): bounded, and far
            # above the default 1000, which a 10,000 reports/s fleet fills in a tenth of a second
            f"max_queued_messages {MAX_QUEUED}",
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

    def restart_down(self) -> None:
        """The first half of a restart: the broker goes away (`start()` brings it back)."""
        self.restarts += 1
        self.stop()

