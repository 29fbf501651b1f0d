"""A virtual serial cable between a simulated device and the gateway: two ptys with the simulator between them.

The device (a MicroPython process on the `sim` board) opens one pty's slave path as its link UART; the
gateway opens the other pty's slave path with pyserial, exactly as it opens a USB-serial adapter. The
simulator holds both masters and copies bytes across, which is where the line's faults happen:

- `inject(data)`: noise on the line: `data` reaches the gateway as if the device had sent it.
- `drop_next(n)`: the next `n` bytes the device sends are lost (a UART overrun, a loose contact).
- `unplug()` / `replug()`: the cable comes out: the gateway's port goes away (its open file sees a hang-up
  and the path disappears, as /dev/ttyUSB0 does) and everything either side sends meanwhile is lost;
  replugging makes a new pty behind the same stable path (`gateway_path`, a symlink, like
  /dev/serial/by-id/...), so the gateway finds its port again by reopening the path.

Why two ptys and not one: both ends must be opened by path (the device's config names its UART, the
gateway's config names its port), and a pty has only one path. The simulator also keeps each slave open
itself, so a side that closes its port (the device between boots, the gateway between reconnects) never
makes the master report a hang-up; the line stays a line.

Bounds: each direction holds at most `MAX_PENDING` bytes that its reader has not taken yet (a UART's
FIFO plus the pty's own buffer); past that, bytes are dropped and counted in `overflow`, as a UART with
nobody reading overruns. No baud-rate pacing: bytes cross as fast as the ptys move them.
"""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.links.tap import SerialTap

MAX_PENDING = 64 * 1024
READ_CHUNK = 4096


@dataclass
class LineStats:
    """Byte and event counters of one line (both directions)."""

    up_bytes: int = 0  # device -> gateway, delivered to the gateway's pty
    down_bytes: int = 0  # gateway -> device
    garbage_bytes: int = 0  # injected noise
    dropped_bytes: int = 0  # lost to drop_next()
    unplugged_bytes: int = 0  # sent by either side while unplugged
    overflow: int = 0  # dropped because the reader did not keep up
    unplugs: int = 0


class _Pty:
    """One pty pair: the master (ours, non-blocking) and the slave, which we keep open too."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave, termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def flush_input(self) -> None:
        """Discard bytes waiting for the slave's reader (a UART's receive FIFO lost at power-off)."""
        termios.tcflush(self.slave, termios.TCIFLUSH)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _Pipe:
    """Bytes waiting to be written into one master, bounded by MAX_PENDING."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stats: LineStats) -> None:
        self._loop = loop
        self._stats = stats
        self._buf = bytearray()
        self._fd: int | None = None

    def attach(self, fd: int | None) -> None:
        if self._fd is not None and self._buf:
            self._loop.remove_writer(self._fd)
        self._buf.clear()
        self._fd = fd

    def put(self, data: bytes) -> int:
        """Queue `data` for the master; returns how many bytes were accepted (the rest overflowed)."""
        if self._fd is None:
            return 0
        room = MAX_PENDING - len(self._buf)
        if len(data) > room:
            self._stats.overflow += len(data) - room
            data = data[:room]
        if not data:
            return 0
        was_empty = not self._buf
        self._buf += data
        if was_empty:
            self._flush()
        return len(data)

    def _flush(self) -> None:
        fd = self._fd
        if fd is None:
            return
        while self._buf:
            try:
                n = os.write(fd, self._buf)
            except BlockingIOError:
                break
            except OSError:  # the pty went away under us: nothing more can cross
                self._stats.overflow += len(self._buf)
                self._buf.clear()
                break
            del self._buf[:n]
        if self._buf:
            self._loop.add_writer(fd, self._on_writable)

    def _on_writable(self) -> None:
        assert self._fd is not None
        self._loop.remove_writer(self._fd)
        self._flush()


class SerialLine:
    """The cable of one serial device. `device_path` goes in the device's config, `gateway_path` in the
    gateway's serial ports. Call `start()` inside the event loop that will relay, `close()` at the end."""

    def __init__(self, name: str, gateway_path: str | os.PathLike[str], tap: SerialTap | None = None) -> None:
        self.name = name
        self.tap = tap  # sees what the device sends and what comes back to it
        self.gateway_path = Path(gateway_path)
        self.stats = LineStats()
        self._device = _Pty()
        self.device_path = self._device.path
        self._gateway: _Pty | None = None
        self._drop = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._to_gateway: _Pipe | None = None
        self._to_device: _Pipe | None = None

    @property
    def plugged(self) -> bool:
        return self._gateway is not None

    def start(self) -> None:
        """Begin relaying (plugged in)."""
        loop = self._loop = asyncio.get_running_loop()
        self._to_gateway = _Pipe(loop, self.stats)
        self._to_device = _Pipe(loop, self.stats)
        self._to_device.attach(self._device.master)
        loop.add_reader(self._device.master, self._from_device)
        self.replug()

    def replug(self) -> None:
        """Put the cable (back) in: a fresh pty behind `gateway_path`."""
        if self._gateway is not None or self._loop is None:
            return
        assert self._to_gateway is not None
        pty = self._gateway = _Pty()
        self.gateway_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.gateway_path.with_name(self.gateway_path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(pty.path)
        tmp.replace(self.gateway_path)  # atomic: the path never points at nothing while plugged
        self._to_gateway.attach(pty.master)
        self._loop.add_reader(pty.master, self._from_gateway)

    def unplug(self) -> None:
        """Pull the cable: the gateway's port hangs up and its path disappears until `replug()`."""
        pty, self._gateway = self._gateway, None
        if pty is None or self._loop is None:
            return
        assert self._to_gateway is not None
        self.stats.unplugs += 1
        self._loop.remove_reader(pty.master)
        self._to_gateway.attach(None)
        self.gateway_path.unlink(missing_ok=True)
        pty.close()

    def inject(self, data: bytes) -> None:
        """Noise on the line: `data` arrives at the gateway (lost if the cable is out)."""
        if self._to_gateway is None or self._gateway is None:
            self.stats.unplugged_bytes += len(data)
            return
        self.stats.garbage_bytes += self._to_gateway.put(data)

    def drop_next(self, n: int) -> None:
        """Lose the next `n` bytes the device sends."""
        self._drop += n

    def device_reset(self) -> None:
        """The device lost power: bytes waiting in its receive buffer are gone."""
        self._device.flush_input()

    def _from_device(self) -> None:
        try:
            data = os.read(self._device.master, READ_CHUNK)
        except (BlockingIOError, OSError):
            return
        if self.tap is not None:
            self.tap.up(data)
        if self._drop:
            lost = min(self._drop, len(data))
            self._drop -= lost
            self.stats.dropped_bytes += lost
            data = data[lost:]
        if not data:
            return
        if self._gateway is None or self._to_gateway is None:
            self.stats.unplugged_bytes += len(data)
            return
        self.stats.up_bytes += self._to_gateway.put(data)

    def _from_gateway(self) -> None:
        pty = self._gateway
        if pty is None:
            return
        try:
            data = os.read(pty.master, READ_CHUNK)
        except (BlockingIOError, OSError):
            return
        if self.tap is not None:
            self.tap.down(data)
        if self._to_device is not None:
            self.stats.down_bytes += self._to_device.put(data)

    def close(self) -> None:
        self.unplug()
        if self._loop is not None:
            self._loop.remove_reader(self._device.master)
            if self._to_device is not None:
                self._to_device.attach(None)
        self._device.close()
