"""Shared pieces of the gateway tests: registry and config files, devices played with the firmware's
own wire code (kerbline.wire under CPython), a serial device on a pty master running the firmware's
serial link, and the gateway run in-process or as a real `kerbline-gateway run` process."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import tomllib
import tty
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config import Config, parse_config
from kerbline.downlink import Downlink
from kerbline.links.serial import SerialLink
from kerbline.store.queue import FlashQueue
from kerbline.wire import cose, report

ROOT = Path(__file__).resolve().parents[2]
DEVICES = {d["id"]: d for d in json.loads((ROOT / "tests/vectors/devices.json").read_text())["devices"]}
PYTHON = ROOT / ".venv/bin/python"


def write_registry(path: Path, ids: list[str] | None = None, extra: dict[str, dict[str, Any]] | None = None) -> Path:
    """A TOML registry with the test devices (fake keys from tests/vectors/devices.json) and `extra` ones."""
    lines = []
    entries = {i: {"kind": DEVICES[i]["kind"], "key": DEVICES[i]["key"]} for i in (ids or list(DEVICES))}
    entries.update(extra or {})
    for device_id, entry in entries.items():
        lines.append(f"[devices.{device_id}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet_key(device_id: str) -> str:
    """A deterministic fake key for generated fleets (never a real one)."""
    import hashlib

    return hashlib.sha256(b"KERBLINE FAKE FLEET KEY " + device_id.encode()).hexdigest()


def key_of(device_id: str) -> bytes:
    return bytes.fromhex(DEVICES[device_id]["key"] if device_id in DEVICES else fleet_key(device_id))


def config_text(tmp: Path, *, mqtt_port: int | None = None, serial: list[str] = (), http_port: int = 0,
                token: str = "test-token", sinks: str | None = None, extra: str = "") -> str:
    mqtt = f"[mqtt]\nport = {mqtt_port}\nclient_id = \"gw-{tmp.name}\"\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\n" \
        if mqtt_port else "[mqtt]\nenabled = false\n"
    ports = ", ".join(json.dumps(p) for p in serial)
    text = f"""
[gateway]
state_dir = "{tmp}/state"
registry = "{tmp}/registry.toml"
registry_check_s = 0.2
{mqtt}
[serial]
ports = [{ports}]
reconnect_min_s = 0.05
reconnect_max_s = 0.3
[http]
port = {http_port}
token = "{token}"
[spool]
group_wait_s = 0.001
[shutdown]
drain_s = 5.0
"""
    if sinks is None:
        sinks = f'[[sinks]]\ntype = "jsonl"\nname = "file"\npath = "{tmp}/out/readings.jsonl"\nbatch.window_s = 0.05\n'
    return text + sinks + extra


def make_config(tmp: Path, **kwargs: Any) -> Config:
    return parse_config(tomllib.loads(config_text(tmp, **kwargs)), tmp)


def sealed_report(device_id: str, boot: int, seq: int, records: list[tuple[Any, ...]] | None = None, *,
                  time_s: int | None = None, uptime: int | None = None) -> bytes:
    if time_s is None and uptime is None:
        time_s = int(time.time())
    payload = report.encode(boot, seq, records or [("fill", 40 + seq % 50), ("batt", 3900)], time=time_s,
                            uptime=uptime)
    return cose.Sealer(device_id, key_of(device_id)).seal(payload)


def jsonl_readings(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def report_keys(readings: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(device, boot, seq) of each report, once per report (the first reading of it)."""
    seen: list[tuple[str, int, int]] = []
    last = None
    for r in readings:
        key = (r["device"], r["boot"], r["seq"])
        if key != last:
            seen.append(key)
        last = key
    return seen


def scrape(port: int, name: str) -> float:
    """One sample of a gateway's /metrics (the first series of `name`), 0 when absent."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------- serial devices


class Pty:
    """A pty whose slave path the gateway opens; the test holds the master (the device's end)."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)

    def read(self, n: int) -> bytes:
        try:
            return os.read(self.master, n)
        except (BlockingIOError, OSError):
            return b""

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class _App:
    """The handler the firmware link calls for time/config/reboot/ping."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.configs: list[dict[Any, Any]] = []
        self.pings = 0
        self.reboots = 0

    def on_time(self, unix_seconds: int) -> None:
        self.times.append(unix_seconds)

    def on_config(self, changes: dict[Any, Any]) -> None:
        self.configs.append(changes)

    def on_reboot(self) -> None:
        self.reboots += 1

    def on_ping(self) -> None:
        self.pings += 1


class SerialDevice:
    """A device on a pty master: the firmware's FlashQueue, Downlink and SerialLink under CPython."""

    def __init__(self, device_id: str, pty: Pty, workdir: Path, ack_ms: int = 300, boot: int = 1) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.id = device_id
        self.pty = pty
        self.boot = boot
        self.seq = 0
        self.sealer = cose.Sealer(device_id, key_of(device_id))
        self.queue = FlashQueue(str(workdir / "queue.log"), 64 * 1024)
        self.app = _App()
        self.downlink = Downlink(self.sealer, str(workdir / "cid"), log=None)
        self.link = SerialLink(pty, self.downlink, self.queue, self.app, ack_ms=ack_ms, backoff_max_ms=ack_ms * 4,
                               log=None)
        self._task: asyncio.Task[None] | None = None

    def report(self, records: list[tuple[Any, ...]] | None = None, alarm: bool = False) -> tuple[int, int]:
        self.seq += 1
        message = sealed_report(self.id, self.boot, self.seq, records)
        self.queue.append(message, self.boot, self.seq, alarm)
        return self.boot, self.seq

    async def _run(self) -> None:
        while True:
            self.link.poll(int(time.monotonic() * 1000))
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# ------------------------------------------------------------------------------- gateway process


class GatewayProcess:
    """`python -m gateway run --config F` as a real process, its log lines in a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(PYTHON), "-m", "gateway", "run", "--config", str(self.config_path)],
                                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway log never showed {text!r}:\n{self.log()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> GatewayProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


__all__ = ["DEVICES", "GatewayProcess", "Pty", "SerialDevice", "config_text", "jsonl_readings", "make_config",
           "report_keys", "sealed_report", "wait_for", "write_registry"]
