"""A technician's bench for the tools' tests: a virtual board, its sensors, its link cable, a registry.

`bench` (async; `rom_bench` the same with a board whose build has a ROM partition) gives:
- `board`: the simulator's VirtualBoard (a pty speaking the MicroPython REPL, the real VM behind it),
  powered on with an empty flash directory: a bare board, as it comes from install-micropython;
- `server`: the simulator's sensor server, which the `sim` board reads its sensors from; each device
  added here gets a `BenchHardware` (`bench.hardware[id]`) whose values the test sets;
- `line`: the simulator's serial cable: the device's config names `line.device_path` as its link UART,
  and the tools open `bench.link_port` as the technician would open the USB-serial adapter;
- `cli(*args)`: runs `python -m gateway.tools.cli device ...` as a subprocess (the real command, exit
  status and output), asynchronously, because the sensor server and the cable run in the test's loop.
`bench.add(id, kind)` registers a device with the real `add` command, then points its settings file at
the sim board (the only change a test makes that a technician would not: pins stay the reference).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.tools.firmware_build import build
from simulator.board import VirtualBoard
from simulator.devices.sensor_server import BenchHardware, SensorServer
from simulator.links.serial import SerialLine

CLI_TIMEOUT = 120.0


@dataclass
class Run:
    status: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


async def run_cli(*args: str, timeout: float = CLI_TIMEOUT) -> Run:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.tools.cli", "device", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    talk = asyncio.ensure_future(proc.communicate())  # shielded below: a cancelled one drops what it read
    try:
        out, err = await asyncio.wait_for(asyncio.shield(talk), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await talk
        err += b"\n[test: killed after timeout]"
    return Run(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())


@pytest.fixture(scope="session")
def firmware_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled firmware, built once per session; flash's own build step then finds it up to date."""
    path = tmp_path_factory.mktemp("firmware-build")
    build(path)
    return path


@dataclass
class Bench:
    root: Path
    board: VirtualBoard
    server: SensorServer
    line: SerialLine
    build_dir: Path
    hardware: dict[str, BenchHardware] = field(default_factory=dict)

    @property
    def registry(self) -> Path:
        return self.root / "registry.toml"

    @property
    def flash_dir(self) -> Path:
        return self.board.flash_dir

    @property
    def link_port(self) -> str:
        return str(self.line.gateway_path)

    def settings_path(self, device_id: str) -> Path:
        return self.root / "devices" / f"{device_id}.json"

    async def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> Run:
        return await run_cli(*args, "--registry", str(self.registry), timeout=timeout)

    async def flash(self, device_id: str, *extra: str, wait_s: float = 30.0) -> Run:
        return await self.cli("flash", device_id, "--port", self.board.port, "--link-port", self.link_port,
                              "--build-dir", str(self.build_dir), "--wait-s", str(wait_s), *extra)

    async def add(self, device_id: str, kind: str = "bin", link_pty: str | None = None, *options: str,
                  **settings: Any) -> None:
        run = await self.cli("add", device_id, "--kind", kind, *options)
        assert run.status == 0, run.text
        self.sim_settings(device_id, link_pty, **settings)

    def sim_settings(self, device_id: str, link_pty: str | None = None, **settings: Any) -> dict[str, Any]:
        path = self.settings_path(device_id)
        data: dict[str, Any] = json.loads(path.read_text())
        data.update(board="sim", sim={"host": "127.0.0.1", "port": self.server.port}, **settings)
        if data["link"]["type"] == "serial":
            data["link"] = {"type": "serial", "pty": link_pty or self.line.device_path}
        path.write_text(json.dumps(data))
        hardware = self.hardware.setdefault(device_id, BenchHardware())
        self.server.add_device({"id": device_id, **data}, hardware)
        return data


@contextlib.asynccontextmanager
async def _bench(tmp_path: Path, build_dir: Path, rom_partition: Path | None) -> AsyncIterator[Bench]:
    server = SensorServer()
    await server.start()
    line = SerialLine("bench", tmp_path / "link-port")
    line.start()
    flash_dir = tmp_path / "flash"
    flash_dir.mkdir()
    board = VirtualBoard(flash_dir, rom_partition=rom_partition)
    board.start()
    assert board.wait_for_prompt(10), "the bare virtual board did not reach its prompt"
    try:
        yield Bench(tmp_path, board, server, line, build_dir)
    finally:
        board.stop()
        line.close()
        await asyncio.sleep(0.05)  # let the sensor server see the VM's connection end (no log noise)
        await server.close()


@pytest.fixture
async def bench(tmp_path: Path, firmware_build_dir: Path) -> AsyncIterator[Bench]:
    """A bare board of a stock MicroPython build: the firmware goes on its flash filesystem."""
    async with _bench(tmp_path, firmware_build_dir, None) as made:
        yield made


@pytest.fixture
async def rom_bench(tmp_path: Path, firmware_build_dir: Path) -> AsyncIterator[Bench]:
    """A bare board of a ROMFS-enabled build: its ROM partition (`bench.board.rom_partition`) is erased."""
    async with _bench(tmp_path, firmware_build_dir, tmp_path / "rom.partition") as made:
        yield made


@pytest.fixture
async def small_rom_bench(tmp_path: Path, firmware_build_dir: Path) -> AsyncIterator[Bench]:
    """A board whose ROM partition (16 KB) is too small for the firmware's image."""
    partition = tmp_path / "rom.partition"
    partition.write_bytes(b"\xff" * 16384)
    async with _bench(tmp_path, firmware_build_dir, partition) as made:
        yield made
