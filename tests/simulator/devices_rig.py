"""Shared pieces of the simulator's device tests: a faithful device on its own (flash dir, sensor server with
bench hardware, serial cable, runner) and the far end of its cable played with `gateway.wire` (the
gateway's decoder, independent of the firmware's encoder): frames decoded and verified, reports acked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial

from gateway.tools.firmware_build import SOURCE_ONLY, BuiltFile, build
from gateway.wire import Command, FrameDecoder, Rejected, Report, decode_serial_report, encode_frame, seal_command
from simulator.devices import provision
from simulator.devices.faithful import ROM_IMAGE, write_rom
from simulator.devices.runner import DEFAULT_HEAP, DeviceRunner
from simulator.devices.sensor_server import BenchHardware, SensorServer
from simulator.links.serial import SerialLine
from simulator.scenario import Scenario, builtin_scenario

_FIRMWARE: dict[str, list[BuiltFile]] = {}
_ROM: dict[str, Path] = {}


def firmware(cache: Path) -> list[BuiltFile]:
    """The compiled firmware, built once per test session."""
    if "set" not in _FIRMWARE:
        _FIRMWARE["set"] = build(cache)
    return _FIRMWARE["set"]


def rom(cache: Path) -> Path:
    """The firmware's ROMFS image (what a street's devices mount at /rom), written once per test session."""
    if "image" not in _ROM:
        files = firmware(cache)
        cache.mkdir(parents=True, exist_ok=True)
        _ROM["image"] = write_rom(cache / ROM_IMAGE, files)
    return _ROM["image"]


def demo() -> Scenario:
    return builtin_scenario("demo")


@dataclass
class WireGateway:
    """The gateway's end of one serial cable, with gateway.wire: reports verified, parsed, acked."""

    path: Path
    key: bytes
    ack: bool = True
    reports: list[Report] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)  # every verified report message, resends included
    rejected: list[str] = field(default_factory=list)
    cid: int = 0

    def __post_init__(self) -> None:
        self.port = serial.Serial(str(self.path), 115200, timeout=0)
        self._decoder = FrameDecoder()
        asyncio.get_running_loop().add_reader(self.port.fileno(), self.poll)

    def poll(self) -> None:
        data = self.port.read(4096)
        for item in self._decoder.feed(data) if data else ():
            if isinstance(item, Rejected):
                self.rejected.append(str(item.reason))
                continue
            try:
                r = decode_serial_report(item, lambda device: self.key)
            except Rejected as e:
                self.rejected.append(str(e.reason))
                continue
            self.frames.append(item)
            if all((x.boot, x.seq) != (r.boot, r.seq) for x in self.reports):
                self.reports.append(r)
            if self.ack:
                self.send("ack", {"boot": r.boot, "seq": r.seq}, r.device)

    def send(self, op: str, args: dict[str, Any], device: str) -> None:
        self.cid += 1
        self.port.write(encode_frame(seal_command(device, self.key, Command(self.cid, op, args))))

    async def wait_reports(self, n: int, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.reports) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.reports)} of {n} reports within {timeout} s; rejected {self.rejected}")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.port.fileno())
        self.port.close()


@dataclass
class BenchDevice:
    """One faithful device (the real firmware in a MicroPython process) on bench hardware and a cable."""

    root: Path
    device_id: str = "bin-0001"
    hardware: Any = field(default_factory=lambda: BenchHardware(time_scale=0.0))
    settings: dict[str, int] = field(default_factory=dict)
    heap: str = DEFAULT_HEAP

    async def start(self) -> None:
        sc = demo()
        spec = next(d for d in sc.devices if d.id == self.device_id)
        self.key_hex = provision.new_key()
        self.key = bytes.fromhex(self.key_hex)
        self.server = SensorServer()
        await self.server.start()
        self.line = SerialLine(self.device_id, self.root / "dev" / f"tty-{self.device_id}")
        self.line.start()
        self.config = provision.device_config(sc, spec, self.key_hex, provision.serial_link(self.line.device_path),
                                              self.server.host, self.server.port, self.settings)
        self.server.add_device({k: v for k, v in self.config.items() if k != "key"}, self.hardware)
        self.flash_dir = self.root / "flash" / self.device_id
        cache = self.root.parent / "firmware-cache"
        provision.flash(self.flash_dir, [f for f in firmware(cache) if f.board_path in SOURCE_ONLY], self.config)
        self.console: list[str] = []
        self.runner = DeviceRunner(self.device_id, self.flash_dir, rom(cache), heap=self.heap,
                                   on_line=lambda d, text: self.console.append(text),
                                   on_boot_end=self.line.device_reset, crash_pause_s=0.05)
        self.gateway = WireGateway(self.line.gateway_path, self.key)
        self.task = asyncio.ensure_future(self.runner.run())

    async def stop(self) -> None:
        self.runner.stop()
        await self.task
        self.gateway.close()
        self.line.close()
        await self.server.close()
