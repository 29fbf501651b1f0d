"""Serial ingest: one device per port, COBS+CRC frames in, `time` and cumulative `ack` out.

Each configured path (e.g. /dev/serial/by-id/usb-...) is opened with pyserial (raw 8N1 at the configured
baud), its file descriptor made non-blocking and watched with `loop.add_reader`: no thread per port,
and reading 64 ports costs only what arrives. `gateway.wire.FrameDecoder` splits the stream at 0x00
and resynchronises after noise or a boot banner.

- A framing error (bad COBS, bad CRC, a run without delimiter) is counted and logged; there is no
  frame to quarantine. Messages with a good CRC go through the Verifier like MQTT ones.
- `ack`: see serial_ack.py for where it may point and why; it is sent only after the spool commit.
- `time`: sent when the port opens (to the device known to be behind it: the registry entry whose
  `link` is this path, else the device last seen on it), to a device that shows up on a port for the
  first time since it opened, and again, at most every `time_resend_s`, to a device whose reports
  carry no sane time.
- The port vanishing (USB unplugged: read/write errors, EOF) closes it; the path is tried again with
  backoff and jitter until it comes back. Framing state and ack trust start over on every open.

Ports are read together, at most every `serial.read_interval_s` (50 ms; `ReadPacer`): a port that
becomes readable has its reader set aside and joins the next read round, in which every waiting port is
read in the same turn of the event loop, and what arrives meanwhile waits in the kernel's tty buffer. USB
serial adapters hand data over every 1 to 16 ms, a frame or two at a time; the per-read costs (a
wake-up, a read, a spool batch) are then paid once per round, so 64 lines at full rate cost the same
whatever the adapters' latency. The interval is capped so that the tty buffer (4 KB) never holds more
than 2 KB at the ports' baud rate (178 ms at 115200); a report waits at most one interval more, well
inside the device's 2 s ack timeout and the upstream batch window. An idle port costs nothing.

Reports go to the spool once per turn of the event loop, not once per port read: every port that was
readable in that turn adds what it read to one `SerialBatch`, handed over in the next turn as one batch
(one commit callback), and each port then settles its own part in stream order and acks its device.
At 64 lines each read may hold a frame or two (USB serial adapters deliver every few ms), so the
per-batch machinery (future, committer hand-off, callbacks) is paid per turn instead of per port.
Bound: one turn's reads, at most READ_CHUNK bytes per port.

Writes are non-blocking; what the port does not take at once waits in a buffer of at most
`MAX_WRITE_BUFFER` bytes (acks and commands are small). Past that a write is dropped and counted:
an ack is made again from the next frame, a command stays open and is sent again.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import serial  # type: ignore[import-untyped]  # pyserial ships no stubs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.config import SerialSection
from gateway.devices import CidStore
from gateway.ingest.inflight import InFlight
from gateway.ingest.serial_ack import AckPoint, Entry
from gateway.logging import fields
from gateway.registry import Registry
from gateway.spool import SubmitResult
from gateway.upstream import RetryPolicy
from gateway.verify import Received, Verifier
from gateway.wire import Command, FrameDecoder, Rejected, encode_frame, seal_command

log = logging.getLogger("gateway.ingest.serial")

MAX_WRITE_BUFFER = 64 * 1024
READ_CHUNK = 4096
TTY_HEADROOM = 2048  # bytes a paced port may let the kernel's 4 KB tty buffer collect between reads

Settles = list[tuple[str, AckPoint, Entry]]  # per report of a read: device, its ack point, its frame entry


class PortClosed(ConnectionError):
    """The port is not open (unplugged, or not yet reopened)."""


class SerialPort:
    """One configured port: its reopen loop, its reader, its writer, and the ack state of its devices."""

    def __init__(self, path: Path, config: SerialSection, verifier: Verifier, registry: Registry, cids: CidStore,
                 rng: random.Random, batch: SerialBatch, pacer: ReadPacer,
                 device_hint: str | None = None) -> None:
        self.path = path
        self._batch = batch
        self.source = str(path)
        self.config = config
        self.verifier = verifier
        self.registry = registry
        self.cids = cids
        self._rng = rng
        self._backoff = RetryPolicy(initial_s=config.reconnect_min_s, max_s=config.reconnect_max_s, jitter=0.5)
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._lost: asyncio.Future[str] | None = None
        self._pacer = pacer
        self._acks: dict[str, AckPoint] = {}
        self._ack_due: set[str] = set()
        self._timed: dict[str, float] = {}  # device -> monotonic time of the last `time` sent
        self._inflight = InFlight()
        self._stopping = False
        self.device = device_hint  # the device behind the port (last seen on it)
        # observation
        self.state = "closed"
        self.opened_at: float | None = None
        self.opens = 0
        self.frames = 0
        self.reads = 0
        self.framing_errors = 0
        self.write_drops = 0
        self.last_rx: float | None = None
        self.last_error: str | None = None
        self.progress_at = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    # --- open / close -------------------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self.progress_at = time.monotonic()
            try:
                self._open(loop)
            except (OSError, serial.SerialException) as exc:
                self.last_error = str(exc)
                self.state = "waiting"
                if attempt == 0:
                    log.warning("serial port unavailable, retrying", extra=fields(port=self.source, error=str(exc)))
                await self._sleep(self._backoff.delay(attempt, None, self._rng))
                attempt += 1
                continue
            attempt = 0
            assert self._lost is not None
            while not self._lost.done():
                self.progress_at = time.monotonic()
                await asyncio.wait([self._lost], timeout=1.0)
            why = self._lost.result()
            self._close(loop)
            if not self._stopping:
                self.last_error = why
                log.warning("serial port lost", extra=fields(port=self.source, device=self.device, error=why))

    async def _sleep(self, delay: float) -> None:
        end = time.monotonic() + delay
        while not self._stopping and time.monotonic() < end:
            self.progress_at = time.monotonic()
            await asyncio.sleep(min(0.5, end - time.monotonic()))

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        port = serial.Serial(self.source, baudrate=self.config.baudrate, timeout=0, write_timeout=0,
                             exclusive=True)
        fd = port.fileno()
        os.set_blocking(fd, False)
        self._serial, self._fd = port, fd
        self._decoder = FrameDecoder()
        self._out.clear()
        self._timed.clear()
        for point in self._acks.values():
            point.loss()
        self._lost = loop.create_future()
        loop.add_reader(fd, self._readable)
        self.state = "open"
        self.opened_at = time.time()
        self.opens += 1
        self.last_error = None
        log.info("serial port open", extra=fields(port=self.source, baud=self.config.baudrate, device=self.device))
        if self.device is not None:
            self._send_time(self.device)

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        if self._serial is not None:
            try:
                self._serial.close()
            except (OSError, serial.SerialException):
                pass
        self._serial, self._fd = None, -1
        self.state = "closed"

    def _lose(self, why: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(why)
        loop = asyncio.get_running_loop()
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)

    # --- reading ------------------------------------------------------------------------------

    def _readable(self) -> None:
        if self._pacer.interval > 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._pacer.wait(self)
        else:
            self.read()

    def read_round(self) -> None:
        """The pacer's round: read what waited, then watch the port again (unless it went meanwhile)."""
        if self._fd < 0 or self._stopping or self._lost is None or self._lost.done():
            return
        self.read()
        if self._fd >= 0 and self._lost is not None and not self._lost.done():
            asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def read(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(exc.strerror or str(exc))
            return
        if not data:
            self._lose("end of file (device gone)")
            return
        self.reads += 1
        arrival = time.time_ns()  # every frame of this read had arrived by now
        self.last_rx = arrival / 1e9
        batch: list[Received] = []
        settles: Settles = []
        for item in self._decoder.feed(data):
            if isinstance(item, Rejected):
                self._framing_error(item)
            else:
                self._message(item, arrival, batch, settles)
        if batch:  # committed with every other port's reads of this turn; settled here in stream order
            self._inflight.add(len(batch))
            self._batch.add(self, batch, settles)

    def _framing_error(self, rejection: Rejected) -> None:
        self.framing_errors += 1
        for point in self._acks.values():
            point.loss()
        self.verifier.metrics.reject(rejection.reason, "serial")
        self.verifier.rejections.record(rejection.reason.value, self.device, "serial", self.source, rejection.detail)

    def _message(self, message: bytes, arrival: int, batch: list[Received], settles: Settles) -> None:
        self.frames += 1
        report = self.verifier.check_serial(message, self.source)
        if report is None:
            # a good CRC: the device sent exactly this; the ack may pass over it (see serial_ack.py)
            kid = self.verifier.last_kid
            claimed = kid if kid is not None and kid in self.registry else self.device
            if claimed is not None:
                point = self._point(claimed)
                point.settle(point.frame(None), True)
            return
        device = report.device
        if device != self.device:
            if self.device is not None:
                log.warning("another device on the port", extra=fields(port=self.source, device=device,
                                                                        before=self.device))
            self.device = device
        if device not in self._timed:
            self._send_time(device)
        elif report.time is None or not self.verifier.timebase.is_sane(report.time, arrival / 1e9):
            if time.monotonic() - self._timed[device] >= self.config.time_resend_s:
                self._send_time(device)
        point = self._point(device)
        settles.append((device, point, point.frame((report.boot, report.seq))))
        batch.append((report, message, self.source, arrival))

    def _point(self, device: str) -> AckPoint:
        point = self._acks.get(device)
        if point is None:
            point = self._acks[device] = AckPoint()
            point.loss()  # first sight: untrusted until the device's next round
        return point

    def stored(self, settles: Settles, results: list[SubmitResult | None]) -> None:
        """The spool's answers for the reports this port added to a batch, in the order it added them."""
        self._inflight.done(len(results))
        for (device, point, entry), result in zip(settles, results):
            point.settle(entry, result is not None)
            if point.want_ack and device not in self._ack_due:
                self._ack_due.add(device)
                asyncio.get_running_loop().call_soon(self._send_ack, device)

    # --- writing ------------------------------------------------------------------------------

    def _command(self, device: str, op: str, args: dict[str, Any]) -> bytes | None:
        entry = self.registry.get(device)
        if entry is None:
            return None
        return encode_frame(seal_command(device, entry.key.bytes, Command(self.cids.next(device), op, args)))

    def _send_ack(self, device: str) -> None:
        self._ack_due.discard(device)
        key = self._acks[device].take_ack()
        if key is None or not self.is_open:
            return
        frame = self._command(device, "ack", {"boot": key[0], "seq": key[1]})
        if frame is not None:
            self.write(frame)

    def _send_time(self, device: str) -> None:
        frame = self._command(device, "time", {"time": int(time.time())})
        if frame is not None and self.is_open:
            self._timed[device] = time.monotonic()
            self.write(frame)

    def write(self, data: bytes) -> None:
        """Queue `data` for the port; PortClosed if it is not open. Dropped (counted) past the buffer bound."""
        if self._fd < 0:
            raise PortClosed(f"{self.source} is not open")
        if self._out:
            if len(self._out) + len(data) > MAX_WRITE_BUFFER:
                self.write_drops += 1
                return
            self._out += data
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._lose(exc.strerror or str(exc))
            raise PortClosed(f"{self.source}: {exc}") from None
        if n < len(data):
            self._out += data[n:]
            asyncio.get_running_loop().add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            n = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(exc.strerror or str(exc))
            return
        del self._out[:n]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self._fd)

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop reading, let received reports commit and their acks go out, close the port."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        if self._fd >= 0:
            loop.remove_reader(self._fd)
        if not await self._inflight.drained():
            log.error("stopping with reports still uncommitted (not acknowledged: they will come again)",
                      extra=fields(count=self._inflight.count))
        await asyncio.sleep(0)  # the acks scheduled by the last commits
        if self._out and self._fd >= 0:
            try:
                os.set_blocking(self._fd, True)
                os.write(self._fd, self._out)
            except OSError:
                pass
        if self._lost is not None and not self._lost.done():
            self._lost.set_result("stopping")
        self._close(loop)

    def public(self) -> dict[str, Any]:
        acked = {d: list(p.acked) if p.acked else None for d, p in self._acks.items()}
        return {"port": self.source, "state": self.state, "device": self.device, "opened_at": self.opened_at,
                "opens": self.opens, "frames": self.frames, "reads": self.reads,
                "framing_errors": self.framing_errors,
                "write_drops": self.write_drops, "last_rx": self.last_rx, "last_error": self.last_error,
                "acked": acked}


class SerialBatch:
    """The reports every port read in one turn of the event loop, handed to the spool together.

    The first `add` of a turn schedules the hand-over with `call_soon`, which runs after every reader
    callback of that turn; the spool's answers go back to each port for its own part, in order."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self._reports: list[Received] = []
        self._parts: list[tuple[SerialPort, Settles]] = []

    def add(self, port: SerialPort, reports: list[Received], settles: Settles) -> None:
        if not self._parts:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._reports += reports
        self._parts.append((port, settles))

    def _hand_over(self) -> None:
        reports, parts = self._reports, self._parts
        self._reports, self._parts = [], []
        self.verifier.store_many(reports, "serial", partial(self._answered, parts))

    @staticmethod
    def _answered(parts: list[tuple[SerialPort, Settles]], results: list[SubmitResult | None]) -> None:
        start = 0
        for port, settles in parts:
            end = start + len(settles)
            port.stored(settles, results[start:end])
            start = end


class ReadPacer:
    """Reads the ports that became readable together, at most once per `interval` (module docstring)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._waiting: list[SerialPort] = []
        self._round: asyncio.TimerHandle | None = None
        self._last = 0.0

    def wait(self, port: SerialPort) -> None:
        self._waiting.append(port)
        if self._round is None:
            loop = asyncio.get_running_loop()
            self._round = loop.call_at(max(loop.time(), self._last + self.interval), self._read_round)

    def _read_round(self) -> None:
        self._round = None
        self._last = asyncio.get_running_loop().time()
        ports, self._waiting = self._waiting, []
        for port in ports:
            port.read_round()

    def cancel(self) -> None:
        if self._round is not None:
            self._round.cancel()
            self._round = None
        self._waiting = []


class SerialIngest:
    """All configured ports; the serial CommandLink for the device tracker."""

    def __init__(self, config: SerialSection, verifier: Verifier, registry: Registry, cids: CidStore,
                 hints: dict[str, str] | None = None, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        hints = hints or {}
        for device in registry.devices.values():
            if device.link:
                hints.setdefault(device.link, device.id)
        batch = SerialBatch(verifier)
        self._pacer = ReadPacer(min(config.read_interval_s, TTY_HEADROOM * 10 / config.baudrate))  # 8N1: 10 bits a byte
        self.ports = {str(path): SerialPort(path, config, verifier, registry, cids, rng, batch, self._pacer,
                                            hints.get(str(path)))
                      for path in config.ports}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(port.run(), name=f"serial {path}") for path, port in self.ports.items()]

    async def stop(self) -> None:
        await asyncio.gather(*(port.stop() for port in self.ports.values()), return_exceptions=True)
        self._pacer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def progress_at(self) -> float:
        """The oldest progress stamp of any port loop (a stuck port shows here)."""
        return min((port.progress_at for port in self.ports.values()), default=time.monotonic())

    def reachable(self, device: str, source: str) -> bool:
        port = self.ports.get(source)
        return port is not None and port.is_open

    async def send_command(self, device: str, source: str, message: bytes) -> None:
        port = self.ports.get(source)
        if port is None:
            raise PortClosed(f"{source} is not a configured port")
        port.write(encode_frame(message))

    def public(self) -> list[dict[str, Any]]:
        return [port.public() for port in self.ports.values()]

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("kerbline_serial_port_open", "1 while the port is open", labels=["port"])
        frames = CounterMetricFamily("kerbline_serial_frames", "Frames with a good CRC read", labels=["port"])
        errors = CounterMetricFamily("kerbline_serial_framing_errors", "Framing errors (COBS, CRC, overlong)",
                                     labels=["port"])
        drops = CounterMetricFamily("kerbline_serial_write_drops", "Writes dropped at the buffer bound",
                                    labels=["port"])
        reads = CounterMetricFamily("kerbline_serial_reads", "Reads of the port (at most one per read interval)",
                                    labels=["port"])
        for path, port in self.ports.items():
            up.add_metric([path], 1 if port.is_open else 0)
            frames.add_metric([path], port.frames)
            errors.add_metric([path], port.framing_errors)
            drops.add_metric([path], port.write_drops)
            reads.add_metric([path], port.reads)
        yield from (up, frames, errors, drops, reads)
