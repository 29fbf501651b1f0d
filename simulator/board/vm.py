"""One boot of the virtual board: a heap-limited MicroPython unix-port process running `mpy/vboard_driver.py`.

The process lives from a (soft or hard) reset to the next one, so everything a piece of code leaves in
its globals is there for the next piece, as on a real board. This module speaks the driver's two-pipe
protocol (described at the top of `mpy/vboard_driver.py`) and nothing else: what the code means for the
REPL is `repl.py`'s business.

The process's stdin is a pipe: what the host types while code runs is written there, so the code can
read it (input(), sys.stdin, `mpremote mount`), and what the code did not read is taken back for the
REPL when the code ends (`reclaim_input()`), as a board's REPL reads what is left in its UART buffer.

Ctrl-C is SIGINT, which the unix port turns into KeyboardInterrupt, unless the code turned it off with
micropython.kbd_intr(-1) or chose another character (reported by the driver: `interrupt_char`). Two rules keep it from
hitting the wrong place: it is sent only while a piece of code runs (after the driver's "started" frame; one that
comes earlier waits for it), and at most once per `SIGINT_SPACING` seconds, because the unix port exits
outright on a second SIGINT that arrives before it has handled the first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from simulator.devices.rom import VM_SIDE as ROM_VM_SIDE, rom_heap

log = logging.getLogger(__name__)

DRIVER_DIR = Path(__file__).resolve().with_name("mpy")
DRIVER = DRIVER_DIR / "vboard_driver.py"

# Code frame kinds (board -> driver).
EXEC_FILE = ord("x")   # raw REPL and paste mode: run as a file named <stdin>
EXEC_SINGLE = ord("s")  # a friendly-REPL input: expression values are printed
RUN_FILE = ord("f")    # boot.py / main.py from the flash, if present

# Control frame kinds (driver -> board).
HELLO = ord("H")
STARTED = ord("A")
DONE = ord("D")
RESET = ord("R")
KBD_INTR = ord("K")

CODE_HEADER = struct.Struct("<BHI")
CTL_HEADER = struct.Struct("<BHBH")
FLAG_SYSTEM_EXIT = 0x01
CHAR_CTRL_C = 3
SIGINT_SPACING = 0.25
READ_CHUNK = 65536
STDIN_PIPE_SIZE = 65536  # set explicitly, so the input bound is the same on every machine

# machine.reset_cause() values (ESP32).
PWRON_RESET = 1
SOFT_RESET = 5


@dataclass(frozen=True)
class Hello:
    """The driver is up, the flash is mounted; `banner` names the MicroPython build."""

    banner: str


@dataclass(frozen=True)
class Started:
    """Code `seq` has begun running."""

    seq: int


@dataclass(frozen=True)
class Done:
    """Code `seq` finished; `traceback` is empty when it raised nothing."""

    seq: int
    system_exit: bool
    traceback: bytes


@dataclass(frozen=True)
class ResetRequested:
    """The code called machine.reset()."""


@dataclass(frozen=True)
class Exited:
    """The process ended without being asked to (a crash, or `os` tricks in user code)."""

    returncode: int | None


Event = Hello | Started | Done | ResetRequested | Exited


class MicroPythonVM:
    """The process of one boot, with non-blocking pipe ends for the board's event loop.

    The owner polls `output_fd` (what the code prints), `control_fd` (events) and, while
    `wants_write()`, `code_fd`; it calls `read_output()`, `read_events()` and `flush_code()` when
    they are ready.
    """

    def __init__(self, flash_dir: Path, heap: str, reset_cause: int, micropython: Path,
                 input_limit: int, rom: Path | None = None) -> None:
        self.input_limit = input_limit
        # The board keeps the read end too, to take back unread input; it stays blocking (the flag would
        # be shared with the process) and is read only for what FIONREAD says is there.
        self._stdin_r, self.stdin_fd = os.pipe()
        fcntl.fcntl(self.stdin_fd, fcntl.F_SETPIPE_SZ, STDIN_PIPE_SIZE)
        code_r, self.code_fd = os.pipe()
        self.control_fd, ctl_w = os.pipe()
        self.output_fd, out_w = os.pipe()
        env = dict(os.environ)
        env.update({
            "VBOARD_CODE_FD": str(code_r),
            "VBOARD_CTL_FD": str(ctl_w),
            "VBOARD_ROOT": str(flash_dir),
            "VBOARD_RESET_CAUSE": str(reset_cause),
            "MICROPYPATH": f"{DRIVER_DIR}:{ROM_VM_SIDE.parent}",
        })
        heapsize: str | int = heap
        if rom is not None:  # the partition on top of the board's heap (simulator/devices/rom.py)
            heapsize, app_heap = rom_heap(heap, rom)
            env.update({"VBOARD_ROM": str(rom), "VBOARD_APP_HEAP": str(app_heap)})
        try:
            # Own session: a Ctrl-C typed at the terminal that runs the board must not reach the VM.
            self.process = subprocess.Popen(
                [str(micropython), "-X", f"heapsize={heapsize}", str(DRIVER)],
                stdin=self._stdin_r, stdout=out_w, stderr=out_w, pass_fds=(code_r, ctl_w),
                env=env, cwd=str(flash_dir), start_new_session=True)
        except BaseException:
            for fd in (self.code_fd, self.control_fd, self.output_fd, self.stdin_fd, self._stdin_r):
                os.close(fd)
            raise
        finally:
            for fd in (code_r, ctl_w, out_w):
                os.close(fd)
        for fd in (self.code_fd, self.control_fd, self.output_fd, self.stdin_fd):
            os.set_blocking(fd, False)
        self._code_out = bytearray()
        self._input_out = bytearray()
        self._ctl_in = bytearray()
        self._seq = 0
        self._running: int | None = None  # seq submitted and not yet done
        self._started = False
        self._interrupt_waiting = False
        self._last_sigint = -SIGINT_SPACING
        self._closed = False
        self.output_open = True
        self.interrupt_char = CHAR_CTRL_C

    # -- code to the driver ------------------------------------------------------------------------

    def submit(self, kind: int, payload: bytes) -> int:
        """Queue one piece of code; returns its seq. Only one runs at a time, the caller ensures it."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._running = self._seq
        self._started = False
        self._interrupt_waiting = False
        self.interrupt_char = CHAR_CTRL_C  # each run starts with Ctrl-C enabled, as pyexec does
        self._code_out += CODE_HEADER.pack(kind, self._seq, len(payload)) + payload
        self.flush_code()
        return self._seq

    def wants_write(self) -> bool:
        return bool(self._code_out)

    def flush_code(self) -> None:
        while self._code_out:
            try:
                written = os.write(self.code_fd, self._code_out)
            except BlockingIOError:
                return
            except BrokenPipeError:  # the process is gone; read_events() reports it
                self._code_out.clear()
                return
            del self._code_out[:written]

    @property
    def running(self) -> bool:
        return self._running is not None

    def feed_input(self, data: bytes) -> int:
        """Give host input to the code's stdin; returns how many bytes were dropped.

        The pipe takes what fits (`STDIN_PIPE_SIZE`); the rest waits here, up to `input_limit` bytes, for
        the code to read (the loop calls `flush_input()` when the pipe has room); past that, dropped.
        """
        room = max(0, self.input_limit - len(self._input_out))
        self._input_out += data[:room]
        self.flush_input()
        return max(0, len(data) - room)

    def wants_input_write(self) -> bool:
        return bool(self._input_out)

    def flush_input(self) -> None:
        while self._input_out:
            try:
                written = os.write(self.stdin_fd, self._input_out)
            except BlockingIOError:
                return
            except BrokenPipeError:
                self._input_out.clear()
                return
            del self._input_out[:written]

    def reclaim_input(self) -> bytes:
        """Take back the input the code did not read; only while no code runs (nobody else reads it)."""
        waiting = struct.unpack("i", fcntl.ioctl(self._stdin_r, termios.FIONREAD, b"\0\0\0\0"))[0]
        unread = os.read(self._stdin_r, waiting) if waiting else b""
        unread += self._input_out
        self._input_out.clear()
        return unread

    def interrupt(self) -> None:
        """Ctrl-C: KeyboardInterrupt in the running code (or as soon as it starts); ignored when idle."""
        if self._running is None:
            return
        if not self._started:
            self._interrupt_waiting = True
            return
        now = time.monotonic()
        if now - self._last_sigint < SIGINT_SPACING:
            return
        self._last_sigint = now
        try:
            os.kill(self.process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    # -- output and events from the driver ---------------------------------------------------------

    def read_output(self, limit: int = READ_CHUNK) -> bytes:
        """What the code printed since the last call (up to `limit` bytes); b"" when nothing is waiting."""
        if not self.output_open:
            return b""
        try:
            data = os.read(self.output_fd, limit)
        except BlockingIOError:
            return b""
        if not data:
            self.output_open = False  # the process closed it (exited): stop polling it
        return data

    def drain_output(self) -> bytes:
        """Everything in the output pipe now: called before a Done/Reset so no output is left behind it."""
        chunks = []
        while chunk := self.read_output():
            chunks.append(chunk)
        return b"".join(chunks)

    def read_events(self) -> list[Event]:
        """Parse the control frames that have arrived; an `Exited` event when the pipe closed."""
        closed = False
        while True:
            try:
                chunk = os.read(self.control_fd, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                closed = True
                break
            self._ctl_in += chunk
        events: list[Event] = []
        while len(self._ctl_in) >= CTL_HEADER.size:
            kind, seq, flags, length = CTL_HEADER.unpack_from(self._ctl_in)
            if len(self._ctl_in) < CTL_HEADER.size + length:
                break
            payload = bytes(self._ctl_in[CTL_HEADER.size:CTL_HEADER.size + length])
            del self._ctl_in[:CTL_HEADER.size + length]
            event = self._event(kind, seq, flags, payload)
            if event is not None:
                events.append(event)
        if closed:
            events.append(Exited(self._wait_exit()))
        return events

    def _event(self, kind: int, seq: int, flags: int, payload: bytes) -> Event | None:
        if kind == HELLO:
            return Hello(payload.decode("utf-8", "replace"))
        if kind == RESET:
            return ResetRequested()
        if kind == KBD_INTR:
            self.interrupt_char = -1 if flags == 0xFF else flags
            return None
        if seq != self._running:
            return None  # a repeat of a frame for code that already finished (see vboard_driver._finish)
        if kind == STARTED:
            if self._started:
                return None
            self._started = True
            if self._interrupt_waiting:
                self._interrupt_waiting = False
                self.interrupt()
            return Started(seq)
        if kind == DONE:
            self._running = None
            return Done(seq, bool(flags & FLAG_SYSTEM_EXIT), payload)
        # Not the driver's protocol: nothing after it can be trusted, so the process goes (a crash).
        log.error("virtual board VM sent control frame kind %#x; killing it", kind)
        self.process.kill()
        return Exited(self._wait_exit())

    def _wait_exit(self) -> int | None:
        try:
            return self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return None

    # -- end ---------------------------------------------------------------------------------------

    def kill(self) -> None:
        """Stop the process at once (reset, power-off) and release its pipes."""
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for fd in (self.code_fd, self.control_fd, self.output_fd, self.stdin_fd, self._stdin_r):
            os.close(fd)
