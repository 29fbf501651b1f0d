"""A pseudo-terminal pair standing in for a serial cable: a real pyserial port on one end, a raw fd on the other.

The slave side (`path`, e.g. /dev/pts/7) is opened with `serial.Serial(path, 115200)`, exactly as the
gateway opens a USB-serial adapter. The master side (`master_fd`) is what a simulated device writes to
and reads from. Both ends are put in raw mode (no echo, no CR/LF translation, no XON/XOFF, no signal
characters), so every byte value crosses unchanged in both directions.
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty

import serial

BAUDRATE = 115200


class PtySerial:
    """One pty pair; `close()` (or leaving the `with` block) closes both ends."""

    def __init__(self, baudrate: int = BAUDRATE, timeout: float = 1.0) -> None:
        self.master_fd, slave_fd = os.openpty()
        try:
            # pyserial also sets raw mode when it opens the port; doing it here makes the pair raw from
            # birth, so bytes a device writes before (or between) the port's opens are not echoed/cooked.
            tty.setraw(slave_fd, termios.TCSANOW)
            self.path = os.ttyname(slave_fd)
            self.port = serial.Serial(self.path, baudrate=baudrate, timeout=timeout)
        except BaseException:
            os.close(self.master_fd)
            raise
        finally:
            # pyserial holds its own fd on the slave; ours was only needed to set raw mode.
            os.close(slave_fd)

    def write_master(self, data: bytes) -> None:
        """Write all of `data` into the device end (it arrives at `port.read()`)."""
        view = memoryview(data)
        while view:
            written = os.write(self.master_fd, view)
            view = view[written:]

    def read_master(self, n: int, timeout: float = 1.0) -> bytes:
        """Read up to `n` bytes that the port side wrote, waiting at most `timeout` s for all of them."""
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.master_fd], [], [], remaining)[0]:
                break
            chunk = os.read(self.master_fd, n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.port.is_open:
            self.port.close()
        if self.master_fd >= 0:
            os.close(self.master_fd)
            self.master_fd = -1

    def __enter__(self) -> PtySerial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
