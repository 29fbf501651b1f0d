"""A real Debian mosquitto broker on a free loopback port, started and stopped by the test itself.

`Mosquitto(workdir, ...)` writes `mosquitto.conf` into `workdir`, and `start()` runs
`/usr/sbin/mosquitto -c mosquitto.conf` with its log (stderr, appended across restarts) in
`mosquitto.log`, then waits until the port accepts TCP connections. The port is chosen once and kept
across `stop()`/`start()`/`restart()`, so clients can reconnect to the same address after a broker
restart. It can be used outside pytest (bench scripts) as a context manager.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

MOSQUITTO = Path("/usr/sbin/mosquitto")
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class BrokerError(RuntimeError):
    """The broker could not be started or stopped; the message carries its log."""


class Mosquitto:
    """One broker process and its files (config, log, persistence folder) in `workdir`.

    `persistence=True` keeps retained messages, subscriptions and queued QoS>0 messages across
    restarts (saved on shutdown to `workdir/data/`). `allow_anonymous=False` plus `extra_config`
    lines such as `password_file ...` or `acl_file ...` set up authenticated brokers; `extra_config`
    lines are appended to the generated config verbatim (they may add listeners too).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        persistence: bool = False,
        extra_config: Sequence[str] = (),
        binary: str | os.PathLike[str] = MOSQUITTO,
    ) -> None:
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.data_dir = self.workdir / "data"
        self.binary = Path(binary)
        self._proc: subprocess.Popen[bytes] | None = None
        self.config_path.write_text(self._config(allow_anonymous, persistence, extra_config))

    def _config(self, allow_anonymous: bool, persistence: bool, extra: Sequence[str]) -> str:
        # mosquitto started as root switches to the "mosquitto" user, which could not write our files.
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [
            f"user {user}",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if persistence:
            self.data_dir.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.data_dir}/"]
        else:
            lines.append("persistence false")
        return "\n".join([*lines, *extra]) + "\n"

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

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the broker and return once it accepts connections; BrokerError (with its log) if not."""
        if self.running:
            raise BrokerError(f"broker on port {self.port} is already running")
        if not self.binary.exists():
            raise BrokerError(f"{self.binary} is missing: run scripts/bootstrap.sh "
                              "(Debian package mosquitto: sudo apt-get install mosquitto)")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([str(self.binary), "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not port_accepts(self.host, self.port):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(f"mosquitto exited with {code} before listening on {self.host}:{self.port}; "
                                  f"log {self.log_path}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s; "
                                  f"log {self.log_path}:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (mosquitto saves its persistence file then), SIGKILL if it does not exit in time."""
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

    def __enter__(self) -> Mosquitto:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Mosquitto({self.host}:{self.port}, running={self.running}, log={self.log_path})"
