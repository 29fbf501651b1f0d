"""The board's serial port: the master end of a pseudo-terminal whose slave path the technician's tools open.

Opening and closing the slave (each `mpremote` run does both) must not disturb the board. When no
process has the slave open, the kernel reports POLLHUP on the master and reads fail with EIO; the port
then counts as unplugged: what the board prints goes nowhere (as a UART's output does with no cable) and
is counted in `dropped_unplugged`, so the next tool to connect does not read a backlog. When a listener
is attached but reads slower than the board prints, output waits in a buffer; at `HIGH_WATER` bytes the
board stops reading the MicroPython process's output, so the code blocks in print() as it would on a
UART, rather than losing bytes.

The slave is put in raw mode once, at creation: termios settings belong to the pty, not to an open
file, so they hold across every later open and close (pyserial sets raw mode too, other tools may not).
"""

from __future__ import annotations

import os
import select
import termios
import tty

HIGH_WATER = 64 * 1024
READ_CHUNK = 4096


class PtyPort:
    """Master end of one pty; `path` is the slave (/dev/pts/N)."""

    def __init__(self) -> None:
        self.master_fd, slave_fd = os.openpty()
        try:
            tty.setraw(slave_fd, termios.TCSANOW)
            self.path = os.ttyname(slave_fd)
        finally:
            os.close(slave_fd)
        os.set_blocking(self.master_fd, False)
        self._out = bytearray()
        self._probe = select.poll()
        self._probe.register(self.master_fd, select.POLLIN)
        self.dropped_unplugged = 0

    def listener_present(self) -> bool:
        """True while some process has the slave open (no hang-up reported on the master)."""
        events = self._probe.poll(0)
        present = not any(mask & select.POLLHUP for _, mask in events)
        if not present and self._out:
            self.dropped_unplugged += len(self._out)
            self._out.clear()
        return present

    def write(self, data: bytes) -> None:
        """Send bytes to the listener; dropped (and counted) when nobody has the port open."""
        if not data:
            return
        if not self.listener_present():
            self.dropped_unplugged += len(data)
            return
        self._out += data
        self.flush()

    def flush(self) -> None:
        while self._out:
            try:
                written = os.write(self.master_fd, self._out)
            except BlockingIOError:
                return
            except OSError:  # EIO: the listener closed the port meanwhile
                self.dropped_unplugged += len(self._out)
                self._out.clear()
                return
            del self._out[:written]

    def wants_write(self) -> bool:
        return bool(self._out)

    def backed_up(self) -> bool:
        """Enough output waits for the listener that the board should stop producing more."""
        return len(self._out) >= HIGH_WATER

    def read(self) -> bytes:
        """Bytes the listener sent; b"" when none are waiting or the port is unplugged."""
        try:
            return os.read(self.master_fd, READ_CHUNK)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        os.close(self.master_fd)
