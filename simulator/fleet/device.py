"""One fleet device: the firmware's application logic in CPython, stepped by the fleet instead of a main loop.

What runs is the firmware's own code: `kerbline.app.App` (boot and seq, alarms with their hysteresis,
report building with `kerbline.wire.report.encode`, sealing with `kerbline.wire.cose.Sealer`),
`kerbline.bin_cycle.sample` (sonar median and outliers, stuck detector, fill, alarms) and
`kerbline.light_cycle.Light` (BH1750 auto-range, LDR fallback, lamp control, power meter), on a
`FleetBoard` (the `sim` board's sensor code, in-process). What the fleet replaces is what a process and a
main loop do on a faithful device: the bin's `run()` (wake, report, deliver, deep sleep) becomes `wake(t)`
returning the next wake's instant, the light's `run()` loop becomes `tick(t)` every `sample_s`, and the
link is the fleet's MQTT side, which takes queued reports with `take()` and acknowledges them with
`acked()`.

Differences from a faithful device, on purpose:
- The store-and-forward queue is `MemQueue`, a RAM model of the flash queue's contract (oldest first,
  bounded by `queue_bytes`, routine reports dropped before alarms, alarms kept unless only alarms are
  left), not `kerbline.store.queue.FlashQueue`: emulating its log file costs about 40 us per report, a
  third of the fleet's whole budget. The flash queue's own behaviour is tested on the firmware.
- Module unloading (`kerbline.mem.drop`) is switched off in the fleet process (`firmware_for_cpython()`):
  it saves heap on a 64 KB board, and in CPython each call is a full garbage collection.
- A power cut keeps the queue (flash) and the boot counter, loses the RTC state: a new boot.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from kerbline import bin_cycle, persist
from kerbline.app import App
from simulator.devices.sensor_server import Hardware, SensorServer
from simulator.fleet.board import FleetBoard

WINDOW = 4  # reports in flight per device, as the firmware's MQTT client


def firmware_for_cpython() -> None:
    """Switch off the firmware's module unloading in this process (see the module docstring)."""
    import kerbline.bin_cycle
    import kerbline.mem

    def keep(*names: str) -> None:
        """Modules stay loaded: CPython has the RAM, and unloading costs a full collection."""

    kerbline.mem.drop = keep
    setattr(kerbline.bin_cycle, "drop", keep)  # imported by name at the module's top


class MemQueue:
    """Reports waiting for their PUBACK, oldest first, bounded by `max_bytes` of messages plus headers.

    `(boot, seq)` -> message in insertion order, the alarms' keys in a set of their own: the link side
    reads the oldest entries as they are stored (`oldest`), with no tuple made per look."""

    HEADER = 14  # what each report costs in the flash queue besides its message

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self._items: dict[tuple[int, int], bytes] = {}
        self._alarms: set[tuple[int, int]] = set()
        self.dropped_routine = 0
        self.dropped_alarm = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, message: bytes, boot: int, seq: int, is_alarm: bool) -> None:
        size = len(message) + self.HEADER
        while self._items and self.bytes_used + size > self.max_bytes:
            self._drop_one()
        key = (boot, seq)
        self._items[key] = message
        if is_alarm:
            self._alarms.add(key)
        self.bytes_used += size

    def _drop_one(self) -> None:
        alarms = self._alarms
        victim = next((k for k in self._items if k not in alarms), None)
        if victim is None:
            victim = next(iter(self._items))
            self.dropped_alarm += 1
        else:
            self.dropped_routine += 1
        self.ack_key(victim)

    def ack_key(self, key: tuple[int, int]) -> bool:
        """Take (boot, seq) off the queue; False when it is not there (acked before, or dropped)."""
        message = self._items.pop(key, None)
        if message is None:
            return False
        self._alarms.discard(key)
        self.bytes_used -= len(message) + self.HEADER
        return True

    def oldest(self, n: int) -> Iterator[tuple[tuple[int, int], bytes]]:
        """The `n` oldest ((boot, seq), message), oldest first."""
        return itertools.islice(self._items.items(), n)

    def peek(self, n: int) -> list[tuple[int, int, bool, bytes]]:
        """The `n` oldest as the flash queue's peek gives them: (boot, seq, is_alarm, message)."""
        return [(key[0], key[1], key in self._alarms, message) for key, message in self.oldest(n)]

    def newest(self, n: int) -> list[bytes]:
        """The last `n` messages appended (still queued), oldest first."""
        return list(itertools.islice(reversed(self._items.values()), n))[::-1] if n > 0 else []

    def ack_one(self, boot: int, seq: int) -> bool:
        return self.ack_key((boot, seq))


class FleetApp(App):
    """The firmware's App with its boot counter and config file held by the fleet."""

    def __init__(self, board: FleetBoard, cfg: dict[str, Any], key: bytes, queue: MemQueue, boot: int,
                 state_dir: Path | None, log: Callable[[str], None]) -> None:
        self._boot = boot
        self._state_dir = state_dir
        super().__init__(board, cfg, key, queue=queue, link=None, log=log)

    def _resume(self) -> None:
        """Always a new boot: the fleet keeps one App across deep sleeps (their RTC state is this object)."""
        st = self.state = persist.State()
        st.boot = self._boot
        st.rtc0 = self.board.rtc_ms()

    def on_config(self, changes: dict[str, Any]) -> None:
        """The firmware's `config.apply` on this device's own file (written on first use)."""
        from kerbline import config

        if self._state_dir is None:
            self.log("config: refused, this fleet has no state directory")
            return
        path = self._state_dir / f"{self.cfg['id']}.config.json"
        if not path.exists():
            path.write_text(json.dumps({k: v for k, v in self.cfg.items()}))
        why = config.apply(self.cfg, changes, str(path))
        self.log("config: " + (why or "applied %s" % ", ".join(sorted(changes))))


class FleetDevice:
    """One device: `wake(t)` (bin) or `tick(t)` (light) at simulated instants; reports wait in `queue`."""

    def __init__(self, cfg: dict[str, Any], key: bytes, server: SensorServer,
                 hardware: Callable[[FleetDevice], Hardware], state_dir: Path | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """`cfg` is the checked config (kerbline.config.check) without its key; `hardware(device)` makes the
        device's hardware (it may read `device.now`, the simulated instant of the current step)."""
        self.id: str = cfg["id"]
        self.kind: str = cfg["kind"]
        self.cfg = cfg
        self.key = key
        self.up_topic = f"kerbline/v1/{self.id}/up".encode()
        self.now = 0.0  # simulated time of the current step (the hardware reads the world at it)
        self.log = log or (lambda text: None)
        self._state_dir = state_dir
        self.hardware = hardware(self)
        server.add_device(cfg, self.hardware)
        self.board = FleetBoard(server, self.id)
        self.queue = MemQueue(cfg["queue_bytes"])
        self.boot = 0
        self.app: FleetApp | None = None
        self.light: Any = None
        self._sampled: int | None = None
        self._reported: int | None = None
        self.reports = 0
        self.powered = True
        self.in_flight: dict[tuple[int, int], bytes] = {}
        self.battery: Any = None  # the bin's world model, charged for each report's radio time
        self.link: Any = None  # the fleet's connection that carries it (None: a fleet without a broker)

    # ------------------------------------------------------------------ power

    def power_on(self, t: float, clock_set: bool = False) -> None:
        """A boot: the next boot number, fresh RTC state; the queue (flash) is kept. `clock_set`: the clock
        is right from the start (a network time source), else it waits for a `time` command."""
        self.powered = True
        self.boot += 1
        self._set_clock(t)
        if clock_set:
            self.board.clock_offset_s = 0
        self.app = FleetApp(self.board, self.cfg, self.key, self.queue, self.boot, self._state_dir, self.log)
        self.in_flight.clear()
        self.light = None
        self._sampled = self._reported = None
        if self.kind == "light":
            from kerbline.light_cycle import Light

            self.light = Light(self.app)

    def power_off(self) -> None:
        self.powered = False
        self.board.power_cut()
        self.in_flight.clear()

    def _set_clock(self, t: float) -> None:
        self.now = t
        self.board.clock_ms = int(t * 1000) - self.board.ms

    # ------------------------------------------------------------------ steps

    def wake(self, t: float) -> float:
        """A bin's wake at t: sample, queue the report; returns the next wake's instant."""
        assert self.app is not None
        self._set_clock(t)
        self.hardware.booted()  # the wake: the world samples the bin once
        start = self.board.ms
        bin_cycle.report(self.app)
        self.reports += 1
        if self.app.ping:  # a ping that came while asleep: answered by this wake's report
            self.app.ping = False
        awake_ms = self.board.ms - start
        return t + max(1000, int(self.cfg["interval"]) * 1000 - awake_ms) / 1000

    def tick(self, t: float) -> float:
        """A light's loop turn at t (every sample_s): sample, drive the lamp, report when due; the next turn."""
        assert self.app is not None and self.light is not None
        self._set_clock(t)
        cfg = self.cfg
        now = self.board.ms
        sampled = self._sampled
        changed, raised = self.light.sample(0 if sampled is None else now - sampled)
        self._sampled = now
        due = self._reported is None or now - self._reported >= cfg["report_s"] * 1000
        if changed or raised or due or self.app.ping:
            self.app.send(self.light.records, raised != 0)
            self.reports += 1
            self.app.ping = False
            self._reported = now
        period: int = max(self.board.ms - now, int(cfg["sample_s"]) * 1000)  # the loop waits out the rest of sample_s
        self.board.ms = now + period
        return t + period / 1000

    def step(self, t: float) -> float:
        return self.wake(t) if self.kind == "bin" else self.tick(t)

    # ------------------------------------------------------------------ link side

    def take(self) -> list[tuple[int, int, bytes]]:
        """Queued reports not yet in flight, oldest first, up to the window; they are in flight after this."""
        in_flight = self.in_flight
        room = WINDOW - len(in_flight)
        out: list[tuple[int, int, bytes]] = []
        if room <= 0:
            return out
        for key, message in self.queue.oldest(WINDOW):
            if key not in in_flight:
                in_flight[key] = message
                out.append((key[0], key[1], message))
                if len(out) >= room:
                    break
        return out

    def acked(self, boot: int, seq: int) -> bool:
        """The PUBACK for (boot, seq): it is no longer in flight and leaves the queue. Whether it left the
        queue now (False: a PUBACK for a copy that was acked before). A PUBACK that comes after a power cut
        forgot what was in flight still takes the report off the queue: the broker has it."""
        key = (boot, seq)
        self.in_flight.pop(key, None)
        return self.queue.ack_key(key)

    def waiting(self) -> bool:
        """Reports queued beyond those in flight (something for the link to take)."""
        return len(self.queue) > len(self.in_flight)

    def link_lost(self) -> None:
        """The connection dropped: what was in flight is still queued and goes again once it is back."""
        self.in_flight.clear()
