"""A real Debian mosquitto broker on a free loopback port, started and stopped by the test itself.

`Mosquitto(workdir, ...)` writes `mosquitto.conf` into `workdir`; the process handling (start and wait
until the port accepts TCP connections, stop, kill, restart on the same port, the log appended across
restarts in `mosquitto.log`) is the simulator's `MosquittoProcess`, so tests and the demo run brokers the
same way. It can be used outside pytest (bench scripts) as a context manager.
"""

from __future__ import annotations

import os
from typing import Sequence

from simulator.links.broker import HOST, MOSQUITTO, BrokerError, MosquittoProcess, free_port, port_accepts

__all__ = ["HOST", "BrokerError", "Mosquitto", "free_port", "port_accepts"]


class Mosquitto(MosquittoProcess):
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
        super().__init__(workdir, port=port, binary=binary)
        self.data_dir = self.workdir / "data"
        self.config_path.write_text(self._config(allow_anonymous, persistence, extra_config))

    def _config(self, allow_anonymous: bool, persistence: bool, extra: Sequence[str]) -> str:
        lines = self.base_config() + [
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "log_type information",  # a failing test's log shows who connected and what was refused
            "connection_messages true",
        ]
        if persistence:
            self.data_dir.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.data_dir}/"]
        else:
            lines.append("persistence false")
        return "\n".join([*lines, *extra]) + "\n"
