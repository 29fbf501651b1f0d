"""The hardware behind the `sim` board: serves each faithful device's sensor reads and output writes.

A faithful device (one MicroPython process running the firmware with `board: "sim"`) has no pins; its
board layer (`firmware/kerbline/board/sim.py`) sends one text line per hardware access over TCP and waits
for one line back. The protocol (ASCII, `\\n`-terminated, at most MAX_LINE bytes):

    hello DEVICE_ID            -> ok                      first line of a connection; names the device
    echo TRIG ECHO TIMEOUT_US  -> US | none               ultrasonic echo pulse width (none: no echo)
    i2cw ADDR HEX              -> ok | nack               I2C write (the BH1750 at 0x23 is emulated)
    i2cr ADDR N                -> HEX | nack              I2C read
    adc PIN                    -> MV                      millivolts at an ADC pin
    temp PIN                   -> SIXTEENTHS | none       DS18B20 reading in 1/16 degC
    pin PIN                    -> 0 | 1                   digital input
    relay PIN 0|1 / pwm PIN DUTY -> ok                    outputs (duty 0..1023)
    sleep MS PIN...            -> timer | pin N           deep sleep: answered at the wake
Anything else gets `err WHY` (the board raises OSError, as a failing bus would); each refusal is counted
in `SensorServer.rejected` by reason and logged, and a line longer than MAX_LINE closes the connection.

The server knows each device by its config (`add_device(config, hardware)`): the config's pin map turns a
GPIO number back into a role ("batt", "tilt", ...), and its calibration turns a quantity back into the
ADC millivolts the firmware will scale (so the firmware reads back the quantity, within its rounding).
What the roles read comes from a `Hardware` object: `BenchHardware` holds values a test sets;
`WorldHardware` takes them from the simulator's world (`simulator.world.World`) at the clock's time, with
the world's sensor faults (NoEcho -> none, BusError -> nack / none).
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from simulator.world.sensors import SensorError

log = logging.getLogger(__name__)

MAX_LINE = 256
BH1750_ADDR = 0x23
ADC_MAX_MV = 3300
DEFAULT_LDR_TABLE = [[150, 0], [600, 5], [1300, 20], [2000, 80], [2600, 300], [3000, 1500], [3200, 10000]]


class NoReading(Exception):
    """The hardware gave nothing for this read (no echo, a bus error); the device sees none / nack."""


def sound_m_s(temp_c: float) -> float:
    """Speed of sound in air (m/s) at temp_c, the approximation the firmware also uses."""
    return 331.3 + 0.606 * temp_c


class Hardware(Protocol):
    """What one device's sensors and outputs are, by role. Raise NoReading for a failed read."""

    def distance_mm(self) -> float: ...            # sensor face to the surface below it
    def air_temp_c(self) -> float: ...             # air the sound travels through
    def temp_c(self) -> float: ...                 # what the DS18B20 reads
    def lux(self) -> float: ...                    # at the light sensors (BH1750 and LDR)
    def i2c_check(self) -> None: ...               # raise NoReading when this I2C transaction fails
    def quantity(self, role: str) -> float: ...    # batt mV, volt V, curr mA
    def switch(self, role: str) -> bool: ...       # tilt, lid, skip (True = active)
    def output(self, role: str, value: int) -> None: ...   # relay 0/1, pwm duty 0..1023
    async def deep_sleep(self, ms: int, roles: list[str]) -> str | None: ...   # role that woke it, or None
    def booted(self) -> None: ...                  # the device connected: a boot or a wake began


class Bh1750Chip:
    """Register model of a BH1750: power state, MTreg, one-time high-resolution mode, 2-byte result."""

    def __init__(self) -> None:
        self.mt = 69
        self.powered = False
        self.result: int | None = None

    def write(self, data: bytes, lux: Callable[[], float]) -> None:
        for op in data:
            if op == 0x00:
                self.powered = False
            elif op == 0x01:
                self.powered = True
            elif op & 0xE0 == 0x40:
                self.mt = (self.mt & 0x1F) | (op & 0x07) << 5
            elif op & 0xE0 == 0x60:
                self.mt = (self.mt & 0xE0) | (op & 0x1F)
            elif op in (0x10, 0x11, 0x13, 0x20, 0x21, 0x23):
                count = lux() * 1.2 * self.mt / 69 * (2 if op in (0x11, 0x21) else 1)
                self.result = min(65535, max(0, int(count)))
                if op & 0x20:  # one-time modes power down after the measurement
                    self.powered = False
            else:
                raise NoReading(f"BH1750 opcode {op:#04x}")

    def read(self, n: int) -> bytes:
        if self.result is None:
            raise NoReading("BH1750 read before a measurement")
        return self.result.to_bytes(2, "big")[:n]


@dataclass
class BenchHardware:
    """Hardware whose values a test sets directly. Outputs are recorded in `outputs`."""

    dist_mm: float = 1000.0
    temp: float = 20.0
    lux_value: float = 100.0
    values: dict[str, float] = field(default_factory=lambda: {"batt": 3800.0, "volt": 230.0, "curr": 0.0})
    switches: dict[str, bool] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    no_echo: bool = False
    bus_error: bool = False
    jitter_mm: float = 1.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    sleeps: list[tuple[int, list[str]]] = field(default_factory=list)
    wake_event: asyncio.Event = field(default_factory=asyncio.Event)
    boots: int = 0
    time_scale: float = 1.0  # wall seconds per slept second (0: a deep sleep ends at once)

    def distance_mm(self) -> float:
        if self.no_echo:
            raise NoReading("no echo")
        return self.dist_mm + self.rng.uniform(-self.jitter_mm, self.jitter_mm)

    def air_temp_c(self) -> float:
        return self.temp

    def temp_c(self) -> float:
        return self.temp

    def lux(self) -> float:
        return self.lux_value

    def i2c_check(self) -> None:
        if self.bus_error:
            raise NoReading("I2C bus error")

    def quantity(self, role: str) -> float:
        return self.values[role]

    def switch(self, role: str) -> bool:
        return self.switches.get(role, False)

    def output(self, role: str, value: int) -> None:
        self.outputs[role] = value

    def booted(self) -> None:
        self.boots += 1

    async def deep_sleep(self, ms: int, roles: list[str]) -> str | None:
        """Sleep `ms` (times time_scale) of wall time; `wake_event.set()` with a role's switch active
        wakes it early."""
        self.sleeps.append((ms, roles))
        self.wake_event.clear()
        try:
            await asyncio.wait_for(self.wake_event.wait(), ms / 1000 * self.time_scale)
        except asyncio.TimeoutError:
            return None
        return next((r for r in roles if self.switch(r)), None)


class WorldHardware:
    """One device of the simulator's world, read at `now()` (simulated unix seconds).

    A bin is sampled once per `booted()` (each BinModel.sample is a wake for its battery), a light at
    every read. Ultrasonic pings and I2C reads go through the world's fault chains. Deep sleep waits
    for the simulated interval on the world's clock (`sleep(seconds)`, a coroutine); switches are
    looked at when it ends (the world has no way to peek at them without a wake).
    """

    def __init__(self, world: Any, device_id: str, now: Callable[[], float],
                 sleep: Callable[[float], Any]) -> None:
        self.world = world
        self.device_id = device_id
        self.kind = world.devices[device_id].kind
        self.now = now
        self.sleep = sleep
        self._bin_sample: Any = None
        self._lamp_on = False
        self._lamp_dim = 1.0

    def booted(self) -> None:
        if self.kind == "bin":
            self._bin_sample = self.world.bin(self.device_id).sample(self.now())

    def _bin(self) -> Any:
        if self._bin_sample is None:
            self.booted()
        return self._bin_sample

    def _light(self) -> Any:
        return self.world.light(self.device_id).sample(self.now())

    def _read(self, quantity: str, value: float) -> float:
        try:
            return float(self.world.sensor(self.device_id, quantity).read(value, self.now()))
        except SensorError as e:
            raise NoReading(e.fault) from e

    def distance_mm(self) -> float:
        return self._read("dist", self._bin().dist_mm)

    def air_temp_c(self) -> float:
        return float(self._bin().temp_c) if self.kind == "bin" else 20.0

    def temp_c(self) -> float:
        if self.kind != "bin":
            raise NoReading("the world models no enclosure temperature for lights")
        return self._read("temp", self._bin().temp_c)

    def lux(self) -> float:
        return float(self._light().lux)

    def i2c_check(self) -> None:
        self._read("lux", 0.0)  # the world's I2C error chain for the light sensor

    def quantity(self, role: str) -> float:
        if role == "batt":
            return self._read("batt", self._bin().batt_mv)
        sample = self._light()
        return float({"volt": sample.volt_v, "curr": sample.curr_ma}[role])

    def switch(self, role: str) -> bool:
        if role == "tilt":
            return bool(self._bin().tilt_deg > 45.0)  # a ball tilt switch closes past about 45 degrees
        if role == "lid":
            return bool(self._bin().lid_open)
        return False

    def output(self, role: str, value: int) -> None:
        if role == "relay":
            self._lamp_on = bool(value)
        elif role == "pwm":
            self._lamp_dim = value / 1023
            self._lamp_on = self._lamp_on or value > 0
        self.world.light(self.device_id).set_output(self.now(), self._lamp_on, self._lamp_dim)

    async def deep_sleep(self, ms: int, roles: list[str]) -> str | None:
        await self.sleep(ms / 1000)
        self._bin_sample = None
        return None


@dataclass
class _Device:
    config: dict[str, Any]
    hardware: Hardware
    roles: dict[int, str]
    bh1750: Bh1750Chip = field(default_factory=Bh1750Chip)
    requests: int = 0


def _inverse_scale(value: float, gain: int, zero: int = 0) -> int:
    """The ADC mV that the firmware's `(mv - zero) * gain // 1000` turns into `value`."""
    return max(0, min(ADC_MAX_MV, zero + math.ceil(value * 1000 / gain))) if value > 0 else zero


def _ldr_mv(lux: float, table: list[list[int]]) -> int:
    """The LDR divider's mV for `lux`: the firmware's table read backwards."""
    if lux <= table[0][1]:
        return table[0][0]
    for (m0, l0), (m1, l1) in zip(table, table[1:]):
        if lux <= l1:
            return round(m0 + (m1 - m0) * (lux - l0) / (l1 - l0))
    return table[-1][0]


class SensorServer:
    """The TCP server faithful devices connect to. `start()`, `port`, `close()`; `add_device()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self.devices: dict[str, _Device] = {}
        self.rejected: Counter[str] = Counter()
        self.connections = 0
        self.hang: set[str] = set()  # fault injection: ops never answered (a bus that locks up)

    def add_device(self, config: dict[str, Any], hardware: Hardware) -> None:
        pins = config.get("pins", {})
        self.devices[config["id"]] = _Device(config, hardware, {gpio: role for role, gpio in pins.items()})

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _reject(self, reason: str, detail: str) -> str:
        self.rejected[reason] += 1
        log.warning("sensor server: %s: %s", reason, detail)
        return f"err {reason}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        device: _Device | None = None
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    self._reject("too_long", f"a line over {MAX_LINE} bytes; closing")
                    return
                if not raw:
                    return
                words = raw.decode("ascii", "replace").split()
                if device is None:
                    if len(words) == 2 and words[0] == "hello" and words[1] in self.devices:
                        device = self.devices[words[1]]
                        device.hardware.booted()
                        reply = "ok"
                    else:
                        reply = self._reject("unknown_device", repr(raw[:40]))
                else:
                    device.requests += 1
                    reply = await self._handle(device, words)
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _handle(self, device: _Device, words: list[str]) -> str:
        op = words[0] if words else ""
        if op in self.hang:
            await asyncio.Event().wait()  # until the device gives up (its watchdog) or the server closes
        try:
            if op == "i2cw":
                return self._i2c_write(device, int(words[1]), bytes.fromhex(words[2]))
            return await self._op(device, op, [int(w) for w in words[1:]])
        except NoReading:
            return "nack" if op == "i2cr" else "none"
        except (IndexError, ValueError, KeyError, StopIteration) as e:
            return self._reject("bad_request", f"{device.config['id']}: {words[:4]!r}: {e!r}")

    def _i2c_write(self, device: _Device, addr: int, data: bytes) -> str:
        if addr != BH1750_ADDR or "scl" not in device.config.get("pins", {}):
            return "nack"
        try:
            device.hardware.i2c_check()
            device.bh1750.write(data, device.hardware.lux)
        except NoReading:
            return "nack"
        return "ok"

    async def _op(self, device: _Device, op: str, n: list[int]) -> str:
        hw = device.hardware
        cfg = device.config
        role = device.roles.get(n[0]) if n else None
        if op == "echo":
            timeout_us = n[2]
            us = round(2 * hw.distance_mm() / sound_m_s(hw.air_temp_c()) * 1000)
            return str(us) if 0 < us <= timeout_us else "none"
        if op == "i2cr":
            if n[0] != BH1750_ADDR or "scl" not in cfg.get("pins", {}):
                return "nack"
            hw.i2c_check()
            return device.bh1750.read(n[1]).hex()
        if op == "temp":
            return str(round(hw.temp_c() * 16)) if role == "temp" else "none"
        if op == "adc":
            if role == "ldr":
                return str(_ldr_mv(hw.lux(), cfg.get("ldr_table", DEFAULT_LDR_TABLE)))
            gain = cfg.get(f"{role}_gain", {"batt": 2000, "volt": 200, "curr": 5405}[str(role)])
            zero = cfg.get("curr_zero_mv", 0) if role == "curr" else 0
            return str(_inverse_scale(hw.quantity(str(role)), gain, zero))
        if op == "pin":
            if role is None:
                return "1"  # unwired inputs float high (pull-ups)
            active = hw.switch(role)
            return str(int(not active) if role == "skip" else int(active))  # skip: held = low
        if op in ("relay", "pwm"):
            hw.output(str(role or op), n[1])
            return "ok"
        if op == "sleep":
            roles = [device.roles.get(p, str(p)) for p in n[1:]]
            woke = await hw.deep_sleep(n[0], roles)
            return "timer" if woke is None else f"pin {next(p for p in n[1:] if device.roles.get(p) == woke)}"
        raise KeyError(op)
