"""A faithful device on the `sim` board, wired to a real sensor server and a real pty, for tests and bench.

`SimRig` flashes a device root the way a technician's tool would (the compiled firmware, boot.py,
main.py, /config.json), serves its hardware with `simulator.devices.sensor_server`, and plays the
gateway's end of its link. MQTT (`broker=`): the rig subscribes to the device's `up` topic and checks
each report with the gateway's decoder; commands go on `down`. Serial, on the pty master: frames are decoded, each report checked and parsed by
the gateway's own decoder (`gateway.wire.messages.decode_serial_report`), and every report acked (unless
`ack` is off). `on_next_report` commands are sent when the next report arrives (the device is awake
then; bytes sent to a sleeping device are lost, as on a real line), before its ack, then forgotten. `boot()`
runs one boot of the MicroPython unix-port process (boot.py then main.py, 64 KB heap) until it exits,
as the simulator's device runner does; exit codes are the sim board's (64 deep-sleep wake, 65 reset).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import termios
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho

from gateway.tools.firmware_build import SOURCE_ONLY, build, romfs_image
from gateway.wire.reasons import Rejected
from gateway.wire.messages import decode_mqtt_report, decode_serial_report
from gateway.wire.model import Report
from kerbline.wire import command, cose, frame
from simulator.devices.sensor_server import BenchHardware, SensorServer
from tests.harness.micropython import prepare_micropython

KEYS = {"bin-0042": "cd128f3348a040664141d96140729e1b738956419d7b367d4294e99e7e79b1eb",
        "lamp-0117": "2679c1e7ff7de74fcf9f630f5a2ce9fc3d4153b270329e4c5e6c476a48467066"}
STOP_GRACE_S = 2.0
BOOT_SCRIPT = """
g = {"__name__": "__main__"}
for name in ("boot.py", "main.py"):
    with open(name) as f:  # the cwd is the flash root
        source = f.read()
    exec(compile(source, name, "exec"), g)
"""


@dataclass
class Boot:
    returncode: int
    output: str
    timed_out: bool = False  # still running at the timeout: stopped by Ctrl-C (SIGINT), else killed


@dataclass
class SimRig:
    root: Path
    firmware: Path  # the compiled set (gateway.tools.firmware_build.build)
    config: dict[str, Any]
    hardware: BenchHardware = field(default_factory=BenchHardware)
    heap: str = "64k"
    # True: the device root is the VM's whole filesystem (the harness's VFS wrapper, as a board's flash).
    # False: a plain folder, the VM's cwd (the firmware's paths are relative to it), without the
    # wrapper's heap cost (about 5 KB on the 64-bit unix port): for measuring the firmware's own need.
    rooted: bool = True
    # True: the `kerbline` package goes into a ROMFS image mounted at /rom (a board's ROM partition, its
    # bytecode run in place) and only boot.py, main.py and the config onto the flash; the heap stays `heap`.
    rom: bool = False
    # (host, port): the device's link is MQTT to this broker (its reports are taken from `up`, commands go
    # on `down`, the broker's PUBACK is the ack) instead of the serial line over a pty.
    broker: tuple[str, int] | None = None
    ack: bool = True  # serial only: an MQTT device is acked by the broker
    reports: list[Report] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    server: SensorServer = field(default_factory=SensorServer)
    cid: int = 0
    on_next_report: list[tuple[str, dict[Any, Any]]] = field(default_factory=list)

    async def start(self) -> None:
        await self.server.start()
        self.config.setdefault("board", "sim")
        self.config["sim"] = {"host": "127.0.0.1", "port": self.server.port}
        self._key = bytes.fromhex(self.config["key"])
        self._sealer = cose.Sealer(self.config["id"], bytes.fromhex(self.config["key"]))
        self._topic = f"kerbline/v1/{self.config['id']}"
        if self.broker is None:
            self.master, self._slave = os.openpty()
            tty.setraw(self._slave, termios.TCSANOW)
            self.config["link"] = {"type": "serial", "pty": os.ttyname(self._slave)}
            self._deframer = frame.Deframer(self._on_frame, self.rejected.append)
            os.set_blocking(self.master, False)
            asyncio.get_running_loop().add_reader(self.master, self._on_bytes)
        else:
            host, port = self.broker
            self.config["link"] = {"type": "mqtt", "host": host, "port": port, "tls": False, "keepalive": 60}
            self._mqtt = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"rig-{self.config['id']}")
            self._mqtt.on_message = lambda _c, _u, msg: self._accept(
                lambda: decode_mqtt_report(msg.payload, msg.topic, self._lookup))
            self._mqtt.connect(host, port)
            self._mqtt.subscribe(self._topic + "/up", qos=1)
            self._mqtt.loop_start()
        self.server.add_device({k: v for k, v in self.config.items() if k != "key"}, self.hardware)
        self.flash()

    def flash(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.rom:
            built = build(self.firmware)
            for name in SOURCE_ONLY:
                shutil.copyfile(self.firmware / name, self.root / name)
            self.rom_image: Path | None = self.root.with_name(self.root.name + ".romfs")
            self.rom_image.write_bytes(romfs_image(built))
        else:
            shutil.copytree(self.firmware, self.root, dirs_exist_ok=True)
            self.rom_image = None
        (self.root / "config.json").write_text(json.dumps(self.config))

    async def close(self) -> None:
        if self.broker is None:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            os.close(self._slave)
        else:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
        await self.server.close()

    def _on_bytes(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        self._deframer.feed(data)

    def _lookup(self, device: str) -> bytes | None:
        return self._key if device == self.config["id"] else None

    def _on_frame(self, message: bytes) -> None:
        got = self._accept(lambda: decode_serial_report(message, self._lookup))
        if got is not None and self.ack:
            self.send("ack", {command.A_BOOT: got.boot, command.A_SEQ: got.seq})

    def _accept(self, decode: Callable[[], Report]) -> Report | None:
        """Check a report as the gateway would; send the commands waiting for it."""
        try:
            got = decode()
        except Rejected as e:
            self.rejected.append(str(e.reason))
            return None
        self.reports.append(got)
        for op, args in self.on_next_report:
            self.send(op, args)
        self.on_next_report = []
        return got

    def send(self, op: str, args: dict[Any, Any] | None = None) -> None:
        """A command to the device, sealed under its key, framed onto its serial line or published on `down`."""
        self.cid += 1
        sealed = self._sealer.seal(command.encode(self.cid, op, args or {}))
        if self.broker is None:
            os.write(self.master, frame.encode(sealed))
        else:
            self._mqtt.publish(self._topic + "/down", sealed, qos=1)

    async def boot(self, timeout: float = 30.0, program: str = BOOT_SCRIPT) -> Boot:
        """Run one boot until the process exits (deep sleep, reset, or main.py returning).

        `program` replaces boot.py + main.py, e.g. what a technician types at the REPL.
        """
        if self.rooted:
            launch = prepare_micropython(program, heap=self.heap, vfs_root=self.root, firmware=None,
                                         rom=self.rom_image)
        else:
            launch = prepare_micropython(program, heap=self.heap, firmware=self.root, cwd=self.root,
                                         rom=self.rom_image)
        try:
            proc = await asyncio.create_subprocess_exec(*launch.argv, env=launch.env, cwd=launch.cwd,
                                                        start_new_session=True,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            talk = asyncio.ensure_future(proc.communicate())  # shielded below: a cancelled one drops what it read
            timed_out = False
            try:
                await asyncio.wait_for(asyncio.shield(talk), timeout)
            except asyncio.TimeoutError:
                timed_out = True
                # Ctrl-C first: the firmware hands over to the REPL and the VM ends its boot cleanly
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(asyncio.shield(talk), STOP_GRACE_S)
                except asyncio.TimeoutError:
                    proc.kill()
            out = (await talk)[0].decode("utf-8", "replace") + ("\n[stopped: timeout]" if timed_out else "")
            return Boot(proc.returncode if proc.returncode is not None else -1, out, timed_out)
        finally:
            launch.cleanup()
