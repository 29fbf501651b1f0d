"""The fleet: thousands of MQTT devices in one CPython process, running the firmware's logic on the world.

Each device is a `FleetDevice` (the firmware's App, bin sampling and light loop on a `FleetBoard`) fed
by `sensor_server.WorldHardware` on the shared `World`. One event heap orders everything by simulated
time: device steps (a bin's wake, a light's loop turn), the world's link and power faults for each device
(`World.faults`), and the ends of fault windows. Time is either stepped (as fast as the CPU and the broker
allow: the load generator) or paced by the scenario's factor.

MQTT side (`simulator.fleet.mqtt.MqttConnection`), two ways, chosen by `connections`:
- `connections=None`: one connection per device, as on the street: client id and user name = device id,
  its password, its will (`offline`, retained) and retained `online`, its own `down` subscription; the
  broker's ACLs hold. 10,000 devices are 10,000 sockets, which asyncio and mosquitto carry.
- `connections=N`: N shared connections as the broker's fleet user (`simulator.links.broker.FLEET_USER`,
  allowed to publish any device's `up` and read any `down`), devices spread over them round-robin. Fewer
  sockets, more messages per write: the cheapest way to load a gateway. There are no per-device wills
  or state messages then.
A report is published when its device has room in its window of 4 (as the firmware's client) and its
connection has room; its PUBACK acknowledges it in the device's queue. Backpressure: stepping pauses
while `max_outstanding` reports are unacknowledged fleet-wide, so a slow broker slows the simulation
instead of growing queues without bound.

Faults: `net_cut` stops the device's link for its window (its own connection is aborted, so the broker
publishes its will); `power_cut` powers it off for the window (the queue survives, the RTC state does
not: a new boot); `brownout` is an instant reboot. Broker restarts are the caller's (`simulator.links`).

Clocks: with `clocks_set` (the default) every device's clock is right from power-on (as a device that
takes its time from the network would be), so reports carry `time` in simulated unix seconds and the
ground truth can be matched exactly; without, they carry `uptime` until a `time` command comes.

Commands: a `down` message goes through the firmware's `Downlink` (COSE under the device key, shape,
replay) to the App's handlers (`time`, `ping`, `config`, `reboot`).
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from kerbline import config as fw_config
from simulator.devices import provision
from simulator.devices.sensor_server import SensorServer, WorldHardware
from simulator.fleet.device import FleetDevice, firmware_for_cpython
from simulator.fleet.mqtt import MqttConnection, MqttError
from simulator.links.broker import FLEET_USER
from simulator.scenario import DeviceSpec
from simulator.world import LinkEvent, SimClock, World

STEP = 0
FAULT = 1
POWER_ON = 2
NET_UP = 3
BATCH = 512  # heap entries handled between two looks at the network
CONNECT_CONCURRENCY = 200


@dataclass
class FleetStats:
    steps: int = 0
    reports: int = 0  # built, sealed and queued
    published: int = 0  # PUBLISH packets written (resends included)
    acked: int = 0  # reports the broker acknowledged (each once, resent copies not again)
    faults: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    connect_errors: int = 0


def tune_gc() -> None:
    """For a process that holds a fleet: what exists now (the devices, their firmware objects, the world's
    models) moves to the collector's permanent generation, and young collections run less often. A fleet
    allocates many short-lived objects per report; without this, every full collection walks all of the
    fleet's long-lived objects (measured: about a fifth of the stepped fleet's time). Call after building."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1_000)


class _Link:
    """One connection and the devices it carries."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.fleet = fleet
        self.name = name
        self.conn: MqttConnection | None = None
        self.devices: list[FleetDevice] = []
        self.up = False
        self.reconnecting = False


class Fleet:
    def __init__(self, world: World, specs: list[DeviceSpec], keys: Mapping[str, str], clock: SimClock, *,
                 host: str, port: int, connections: int | None = None,
                 passwords: Mapping[str, str] | None = None, fleet_password: str | None = None,
                 settings: Mapping[str, Mapping[str, int]] | None = None, state_dir: Path | None = None,
                 max_outstanding: int = 20000, keepalive: int = 60, clocks_set: bool = True) -> None:
        firmware_for_cpython()
        self.world = world
        self.clock = clock
        self.host = host
        self.port = port
        self.shared = connections
        self.passwords = dict(passwords or {})
        self.fleet_password = fleet_password
        self.max_outstanding = max_outstanding
        self.keepalive = keepalive
        self.clocks_set = clocks_set
        self.stats = FleetStats()
        self.server = SensorServer()
        self.devices: dict[str, FleetDevice] = {}
        self._heap: list[tuple[float, int, int, FleetDevice]] = []  # (t, kind, order, device)
        self._order = itertools.count()
        self._links: list[_Link] = []
        self._net_down: set[str] = set()
        self._ready: set[FleetDevice] = set()  # devices with queued reports that may be publishable
        self._outstanding = 0
        self._room = asyncio.Event()
        self._room.set()
        self._downlinks: dict[str, Any] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.state_dir = state_dir
        self.on_report: Callable[[str, bytes], None] | None = None  # (device, sealed report) as each is made
        for spec in specs:
            if spec.link != "mqtt":
                raise ValueError(f"{spec.id}: the fleet runs MQTT devices only (serial devices run faithful)")
            raw = provision.device_config(world.scenario, spec, keys[spec.id], provision.mqtt_link(host, port),
                                          settings={**(settings or {}).get(spec.kind, {})})
            cfg = fw_config.check(raw)
            key = fw_config.take_key(cfg)
            device = self.devices[spec.id] = FleetDevice(cfg, key, self.server, self._hardware, state_dir)
            device.battery = world.bin(spec.id) if spec.kind == "bin" else None

    def _hardware(self, device: FleetDevice) -> WorldHardware:
        return WorldHardware(self.world, device.id, lambda: device.now, _no_sleep)

    # ------------------------------------------------------------------ connections

    async def connect(self) -> None:
        """Open every connection (per device, or the shared ones) and subscribe to the commands."""
        if self.shared:
            self._links = [_Link(self, f"fleet-{i}") for i in range(self.shared)]
            for i, device in enumerate(self.devices.values()):
                link = self._links[i % self.shared]
                link.devices.append(device)
                device.link = link
        else:
            for device in self.devices.values():
                link = _Link(self, device.id)
                link.devices.append(device)
                self._links.append(link)
                device.link = link
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(link: _Link) -> None:
            async with gate:
                await self._open(link)

        await asyncio.gather(*(one(link) for link in self._links))

    async def _open(self, link: _Link) -> bool:
        conn = MqttConnection(self._on_ack, self._on_message, lambda exc: self._on_lost(link, conn),
                              max_inflight=65535 if self.shared else 16, autoflush=False)
        try:
            if self.shared:
                await conn.open(self.host, self.port, link.name, FLEET_USER, self.fleet_password, self.keepalive)
                await conn.subscribe(b"kerbline/v1/+/down")
            else:
                dev = link.name
                state = f"kerbline/v1/{dev}/state".encode()
                await conn.open(self.host, self.port, dev, dev, self.passwords.get(dev), self.keepalive,
                                will=(state, b"offline"))
                conn.publish(state, b"online", None, retain=True, qos=0)
                await conn.subscribe(f"kerbline/v1/{dev}/down".encode())
        except (OSError, asyncio.TimeoutError, MqttError):
            conn.abort()
            self.stats.connect_errors += 1
            return False
        link.conn = conn
        link.up = True
        self._ready.update(link.devices)
        return True

    def _on_lost(self, link: _Link, conn: MqttConnection) -> None:
        if link.conn is not conn:
            return  # an old connection's late news
        link.up = False
        link.conn = None
        for device in link.devices:
            self._outstanding -= len(device.in_flight)
            device.link_lost()
        self._room.set()
        self._start_reconnect(link)

    def _start_reconnect(self, link: _Link) -> None:
        """One reconnect loop per link at a time."""
        if link.reconnecting or self._closing:
            return
        link.reconnecting = True
        task = asyncio.ensure_future(self._reconnect(link))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconnect(self, link: _Link) -> None:
        delay = 0.05
        try:
            while not link.up and not self._closing:
                if not self.shared and link.name in self._net_down:
                    await asyncio.sleep(0.02)  # the device's network is down: no connection can be made
                    continue
                if await self._open(link):
                    self.stats.reconnects += 1
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            link.reconnecting = False

    async def close(self) -> None:
        """Disconnect everything; background reconnects end."""
        self._closing = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for link in self._links:
            if link.conn is not None:
                link.conn.close()
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ MQTT callbacks

    def _on_ack(self, token: tuple[FleetDevice, int, int]) -> None:
        """A PUBACK. `acked` counts reports the broker acknowledged, each once; `outstanding` counts
        publishes in flight (a power cut or a lost connection has already taken its own off)."""
        device, boot, seq = token
        in_flight = len(device.in_flight)
        if device.acked(boot, seq):
            self.stats.acked += 1
        if len(device.in_flight) < in_flight:
            self._outstanding -= 1
            if self._outstanding < self.max_outstanding and not self._room.is_set():
                self._room.set()
        if device.waiting():
            self._ready.add(device)

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        parts = topic.split(b"/")
        device = self.devices.get(parts[2].decode()) if len(parts) == 4 else None
        if device is None or device.app is None or not device.powered:
            return
        downlink = self._downlinks.get(device.id)
        if downlink is None:
            from kerbline.downlink import Downlink

            path = str(self.state_dir / f"{device.id}.cid") if self.state_dir is not None else "/dev/null"
            downlink = self._downlinks[device.id] = Downlink(device.app.sealer, path, None)
        op = downlink.handle(payload, device.app)
        if op is not None:
            self.stats.commands[op] += 1
            if op == "reboot" and device.app.reboot:
                device.app.reboot = False
                self._push(device.now, POWER_ON, device)

    # ------------------------------------------------------------------ publishing

    def pump(self) -> None:
        """Publish what the ready devices have queued, as far as windows and connections allow, then write
        out each connection that got something (one write per connection per pump)."""
        ready, self._ready = self._ready, set()
        written: set[MqttConnection] = set()
        net_down = self._net_down
        published = 0
        for device in ready:
            link = device.link  # None: not connected (a fleet stepped without a broker)
            if link is None or not device.powered or device.id in net_down:
                continue
            conn = link.conn
            if conn is None:
                continue
            topic = device.up_topic
            for boot, seq, message in device.take():
                if not conn.publish(topic, message, (device, boot, seq)):
                    device.in_flight.pop((boot, seq), None)
                    self._ready.add(device)
                    break
                published += 1
                written.add(conn)
        for conn in written:
            conn.flush()
        self._outstanding += published
        self.stats.published += published
        if self._outstanding >= self.max_outstanding:
            self._room.clear()

    # ------------------------------------------------------------------ simulation

    def _push(self, t: float, kind: int, device: FleetDevice) -> None:
        heapq.heappush(self._heap, (t, kind, next(self._order), device))

    def start(self) -> None:
        """Power every device on at the scenario's start and schedule its faults."""
        t0 = self.world.scenario.start
        for device_id, device in self.devices.items():
            device.power_on(t0, self.clocks_set)
            self._push(t0, STEP, device)
            nxt = self.world.faults.device(device_id).peek()
            if nxt < math.inf:
                self._push(nxt, FAULT, device)

    async def run(self, until: float, on_batch: Callable[[], None] | None = None) -> None:
        """Play every event up to simulated time `until` (stepped: as fast as possible; paced: on time).
        Events go in batches of BATCH, each followed by a pump and a turn of the event loop; a stepped
        clock moves once per batch, to the batch's last instant (nothing reads it within a batch)."""
        heap = self._heap
        clock = self.clock
        paced = clock.paced
        pop = heapq.heappop
        handle = self._handle
        while heap and heap[0][0] <= until and not self._closing:
            if paced:
                delay = clock.wall_delay(heap[0][0])
                if delay > 0:
                    self.pump()
                    await asyncio.sleep(min(delay, 0.05))
                    continue
            t = heap[0][0]
            for _ in range(BATCH):
                if not heap or heap[0][0] > until:
                    break
                t, kind, _, device = pop(heap)
                handle(t, kind, device)
                if paced and clock.wall_delay(heap[0][0] if heap else until) > 0:
                    break
            if not paced:
                clock.advance_to(max(t, clock.now()))
            self.pump()
            if on_batch is not None:
                on_batch()
            if not self._room.is_set():
                await self._room.wait()
            else:
                await asyncio.sleep(0)
        if not paced and not self._closing:
            clock.advance_to(max(until, clock.now()))

    def _handle(self, t: float, kind: int, device: FleetDevice) -> None:
        if kind == STEP:
            if not device.powered:
                return  # a power cut dropped this step; power_on schedules the next
            before = device.reports
            nxt = device.step(t)
            self.stats.steps += 1
            made = device.reports - before
            if made:
                self.stats.reports += made
                self._ready.add(device)
                if self.on_report is not None:
                    for message in device.queue.newest(made):
                        self.on_report(device.id, message)
                if device.battery is not None:
                    device.battery.reported(t)  # the radio's charge
            self._push(nxt, STEP, device)
        elif kind == FAULT:
            stream = self.world.faults.device(device.id)
            for event in stream.pop_due(t):
                self._fault(device, event)
            nxt = stream.peek()
            if nxt < math.inf:
                self._push(nxt, FAULT, device)
        elif kind == POWER_ON:
            device.power_on(t, self.clocks_set)
            self._ready.add(device)
            self._push(t, STEP, device)
        elif kind == NET_UP:
            self._net_down.discard(device.id)
            self._ready.add(device)

    def _fault(self, device: FleetDevice, e: LinkEvent) -> None:
        self.stats.faults[e.kind] += 1
        if e.kind == "net_cut":
            self._net_down.add(device.id)
            link = device.link
            if not self.shared and link is not None and link.conn is not None:
                link.conn.abort()  # its connection_lost starts the reconnect loop, which waits for NET_UP
            self._push(e.t + e.duration_s, NET_UP, device)
        elif e.kind in ("power_cut", "brownout"):
            self._outstanding -= len(device.in_flight)
            device.power_off()
            self._push(e.t + (e.duration_s if e.kind == "power_cut" else 0.0), POWER_ON, device)

    def finish_faults(self) -> None:
        """End every fault still in progress (networks back, power on), e.g. when a run is over."""
        t = self.clock.now()
        for device_id in list(self._net_down):
            self._net_down.discard(device_id)
            self._ready.add(self.devices[device_id])
        for device in self.devices.values():
            if not device.powered:
                device.power_on(t, self.clocks_set)
                self._ready.add(device)
        for link in self._links:
            if not link.up:
                self._start_reconnect(link)

    # ------------------------------------------------------------------ views

    @property
    def queued(self) -> int:
        return sum(len(d.queue) for d in self.devices.values())

    @property
    def outstanding(self) -> int:
        return self._outstanding


async def _no_sleep(seconds: float) -> None:
    """Fleet devices never ask the sensor server to sleep: their deep sleep is the fleet's schedule."""
