"""Faithful devices: a street of real MicroPython processes running the unchanged firmware on the world.

`FaithfulStreet` builds, for each device of a scenario it is given:
- a key and a flash directory: boot.py, main.py and `config.json` (`provision.py`), as on a board whose
  MicroPython has a ROM partition; the firmware package itself is one ROMFS image (`ROM_IMAGE` in the run
  directory, `firmware_build.romfs_image`), built once per street, read-only, that every device mounts at
  /rom at each boot and runs in place (the runner module says how its heap stays the board's);
- the device's hardware in the sensor server (`sensor_server.WorldHardware` on the shared `World`, read
  at the paced clock's time), so every reading it takes is the world's, logged in the ground truth;
- its link: a `SerialLine` (two ptys; the gateway opens `gateway_path`) or a `NetLink` to the broker
  (the device's own MQTT connection, through a relay that a `net_cut` can cut), each watched by a `Tap`;
- a `DeviceRunner` that boots it again after every deep sleep, reset or watchdog, and cuts its power;
- the world's fault events for it, played on the link and the power supply (`FaultPlayer`).

Time. The world runs on the paced simulated clock; the firmware runs on the host's clocks (it has no
other). A deep sleep is where they meet: the sensor server answers the device's `sleep` request when the
simulated interval has passed on the paced clock, so at 1440x a 15-minute sleep takes 0.6 s. Whatever the
firmware does awake (sampling, delivering) takes wall time, which the paced clock multiplies: at 1440x a
bin's second awake is 24 simulated minutes. An always-on streetlight samples every `sample_s` *wall*
seconds, so its settings are scaled here (`light_settings`) to sample every few simulated minutes as far
as the firmware's minimums allow. Device clocks run on the host clock (set by the gateway's `time`
command); the paced clock maps that to simulated time (`SimClock.start + (wall - wall0) x factor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gateway.tools.firmware_build import SOURCE_ONLY, BuiltFile, romfs_image
from gateway.wire import Report
from simulator.devices import provision
from simulator.devices.runner import DEFAULT_HEAP, DeviceRunner
from simulator.devices.sensor_server import SensorServer, WorldHardware
from simulator.links.broker import Broker
from simulator.links.faults import FaultPlayer, Handler
from simulator.links.network import NetLink
from simulator.links.serial import SerialLine
from simulator.links.tap import MqttTap, SerialTap, Tap
from simulator.scenario import DeviceSpec
from simulator.world import LinkEvent, SimClock, World

ROM_IMAGE = "firmware.romfs"  # in the run directory: the ROM partition every device of the street reads
LIGHT_SAMPLE_SIM_S = 300.0  # how often, in simulated seconds, a faithful light should sample at best


def light_settings(factor: float, report_sim_s: float) -> dict[str, int]:
    """Firmware settings (wall seconds) that make an always-on light sample and report at simulated
    cadences, bounded by the firmware's minimums (sample_s >= 1, report_s >= 10)."""
    return {"sample_s": max(1, min(600, round(LIGHT_SAMPLE_SIM_S / factor))),
            "report_s": max(10, min(86400, round(report_sim_s / factor))),
            "switch_n": 1 if factor >= 60 else 2}


def write_rom(path: Path, files: list[BuiltFile]) -> Path:
    """Write the firmware's ROMFS image to `path`, read-only: the devices share it and only read it (it is
    written beside and moved in, so a run directory used again gets the new image whole)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_bytes(romfs_image(files))
    tmp.chmod(0o444)
    os.replace(tmp, path)
    return path


@dataclass
class FaithfulDevice:
    spec: DeviceSpec
    key: str
    flash_dir: Path
    tap: Tap
    runner: DeviceRunner
    line: SerialLine | None = None
    net: NetLink | None = None
    config: dict[str, Any] = field(default_factory=dict)


class FaithfulStreet:
    """The faithful devices of one run. `await start()`, then `await play_faults(until)` (optional),
    `await stop()`. `gateway_ports` are the serial paths for the gateway's config (known before start).
    `heap` is each device's (the runner module explains it)."""

    def __init__(self, world: World, clock: SimClock, run_dir: Path, specs: list[DeviceSpec], *,
                 broker: Broker | None = None, heap: str = DEFAULT_HEAP,
                 passwords: Mapping[str, str] | None = None, keys: Mapping[str, str] | None = None,
                 firmware: list[BuiltFile] | None = None, settings: Mapping[str, Mapping[str, int]] | None = None,
                 on_line: Callable[[str, str], None] | None = None) -> None:
        self.world = world
        self.clock = clock
        self.run_dir = Path(run_dir)
        self.specs = list(specs)
        self.broker = broker
        self.heap = heap
        self.passwords = dict(passwords or {})
        self.keys = {s.id: (keys or {}).get(s.id) or provision.new_key() for s in self.specs}
        self._firmware = firmware
        self._settings = settings or {}
        self.on_line = on_line
        self.server = SensorServer()
        self.faults = FaultPlayer(clock)
        self.devices: dict[str, FaithfulDevice] = {}
        self.gateway_ports = {s.id: self.port_path(self.run_dir, s.id) for s in self.specs if s.link == "serial"}
        if any(s.link == "mqtt" for s in self.specs) and broker is None:
            raise ValueError("MQTT devices need a broker")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @staticmethod
    def port_path(run_dir: Path, device_id: str) -> Path:
        """The stable path of a serial device's port (a symlink to the current pty, like /dev/serial/by-id/)."""
        return Path(run_dir) / "dev" / f"ttyKL-{device_id}"

    def settings_for(self, spec: DeviceSpec) -> dict[str, int]:
        base = light_settings(self.clock.factor or 1.0, self.world.scenario.lights.interval_s) \
            if spec.kind == "light" else {}
        base.update(self._settings.get(spec.kind, {}))
        base.update(self._settings.get(spec.id, {}))
        return base

    async def start(self) -> None:
        """Provision every device, open its link, and power it on."""
        await self.server.start()
        files = self._firmware if self._firmware is not None else provision.firmware(self.run_dir / "firmware")
        rom = write_rom(self.run_dir / ROM_IMAGE, files)
        on_flash = [f for f in files if f.board_path in SOURCE_ONLY]
        for spec in self.specs:
            self.devices[spec.id] = await self._add(spec, on_flash, rom)
        for device in self.devices.values():
            self._tasks.append(asyncio.ensure_future(device.runner.run()))

    async def _add(self, spec: DeviceSpec, files: list[BuiltFile], rom: Path) -> FaithfulDevice:
        key = self.keys[spec.id]
        tap = Tap(spec.id, bytes.fromhex(key), self._on_report(spec))
        line = net = None
        if spec.link == "serial":
            line = SerialLine(spec.id, self.gateway_ports[spec.id], SerialTap(tap))
            line.start()
            link = provision.serial_link(line.device_path)
        else:
            assert self.broker is not None
            net = NetLink(spec.id, self.broker.host, self.broker.port, tap=MqttTap(tap))
            await net.start()
            link = provision.mqtt_link(net.host, net.port, self.passwords.get(spec.id))
        config = provision.device_config(self.world.scenario, spec, key, link, self.server.host, self.server.port,
                                         self.settings_for(spec))
        flash_dir = self.run_dir / "devices" / spec.id
        provision.flash(flash_dir, files, config)
        hardware = WorldHardware(self.world, spec.id, self.clock.now, self._sleep)
        self.server.add_device({k: v for k, v in config.items() if k != "key"}, hardware)
        runner = DeviceRunner(spec.id, flash_dir, rom, heap=self.heap, on_line=self.on_line,
                              on_boot_end=line.device_reset if line is not None else None)
        return FaithfulDevice(spec, key, flash_dir, tap, runner, line, net, config)

    def _on_report(self, spec: DeviceSpec) -> Callable[[Report], None] | None:
        if spec.kind != "bin":
            return None
        model = self.world.bin(spec.id)
        return lambda report: model.reported(self.clock.now())  # the radio's charge, on the battery

    async def _sleep(self, seconds: float) -> None:
        """A device's deep sleep on the paced clock; cut short when the street stops, so no sensor server
        request is left waiting when its event loop ends."""
        end = self.clock.now() + seconds
        while not self._closing:
            delay = self.clock.wall_delay(end)
            if delay <= 0.0:
                return
            await asyncio.sleep(min(delay, 0.1))

    # ------------------------------------------------------------------ faults

    def handlers(self, device: FaithfulDevice) -> dict[str, Handler]:
        runner = device.runner

        def power_cut(e: LinkEvent) -> Callable[[], object]:
            runner.power_cut()
            return runner.power_on

        def brownout(e: LinkEvent) -> None:
            runner.brownout()

        out: dict[str, Handler] = {"power_cut": power_cut, "brownout": brownout}
        line, net = device.line, device.net
        if line is not None:
            def unplug(e: LinkEvent) -> Callable[[], object]:
                line.unplug()
                return line.replug

            out["unplug"] = unplug
            out["garbage"] = lambda e: line.inject(e.data)
            out["drop_bytes"] = lambda e: line.drop_next(e.count)
        if net is not None:
            def net_cut(e: LinkEvent) -> Callable[[], object]:
                net.cut()
                return net.restore

            out["net_cut"] = net_cut
        return out

    async def play_faults(self, until: float) -> None:
        """Play every device's faults until simulated time `until` (the broker's are the run's)."""
        await asyncio.gather(*(self.faults.play(self.world.faults.device(d.spec.id), self.handlers(d), until)
                               for d in self.devices.values()))

    # ------------------------------------------------------------------ end

    @property
    def queued(self) -> int:
        """Reports the devices have sent and not had acknowledged (as their taps saw them)."""
        return sum(d.tap.queued for d in self.devices.values())

    async def stop(self) -> None:
        """Power everything off and close the links (faults in progress end first)."""
        await self.faults.finish()
        self._closing = True
        for device in self.devices.values():
            device.runner.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0.15)  # deep sleeps in the sensor server see _closing and answer
        for device in self.devices.values():
            if device.line is not None:
                device.line.close()
            if device.net is not None:
                with contextlib.suppress(Exception):
                    await device.net.close()
        await self.server.close()
