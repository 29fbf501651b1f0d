"""A board that the technician's tools flash: a pty that speaks the MicroPython REPL, backed by the real VM.

    with VirtualBoard(flash_dir, heap="128k") as board:
        subprocess.run([".venv/bin/mpremote", "connect", board.port, "fs", "cp", "main.py", ":main.py"])
        board.power_cycle()

`flash_dir` is the board's whole filesystem: what code on the board writes to "/x" lands in
`flash_dir/x`, and boot.py / main.py are read from there at every reset. `rom_partition`, when given, is
a ROMFS-enabled build's ROM partition (a host file, created erased at `ROM_PARTITION_BYTES`): mounted at
/rom when it holds an image, written by `mpremote romfs deploy` through `vfs.rom_ioctl`, kept across resets. One thread runs the event loop
(pty, VM pipes); the public methods may be called from any thread. The protocol itself is `repl.py`,
the VM process `vm.py`, the serial port `pty_port.py`.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
from pathlib import Path
from types import TracebackType

from simulator.board.pty_port import PtyPort
from simulator.board.repl import MAX_CODE, RX_LIMIT, BoardRepl, Phase
from gateway.tools.firmware_build import micropython_path
from simulator.board.vm import MicroPythonVM

log = logging.getLogger(__name__)

DEFAULT_HEAP = "128k"
ROM_PARTITION_BYTES = 64 * 1024  # room for the firmware's image (48 KB budget) in 4 KB flash sectors
UNPLUGGED_RECHECK_MS = 50  # how often to look for a tool opening the port while nobody has it open


class VirtualBoard:
    """One virtual board; `start()` powers it on, `port` is the path tools open as a serial port."""

    def __init__(self, flash_dir: str | os.PathLike[str], heap: str | int = DEFAULT_HEAP,
                 micropython: str | os.PathLike[str] | None = None, max_code: int = MAX_CODE,
                 rom_partition: str | os.PathLike[str] | None = None) -> None:
        self.flash_dir = Path(flash_dir).resolve()
        if not self.flash_dir.is_dir():
            raise NotADirectoryError(f"flash directory {self.flash_dir} does not exist")
        self.rom_partition = Path(rom_partition).resolve() if rom_partition is not None else None
        if self.rom_partition is not None and not self.rom_partition.exists():
            self.rom_partition.write_bytes(b"\xff" * ROM_PARTITION_BYTES)
        self.heap = str(heap)
        self.micropython = Path(micropython) if micropython else micropython_path()
        self.max_code = max_code
        self._port: PtyPort | None = None
        self._repl: BoardRepl | None = None
        self._thread: threading.Thread | None = None
        self._commands: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = -1, -1
        self._phase_changed = threading.Condition()
        self._phase = Phase.HALTED
        self._boot_count = 0

    # -- public API --------------------------------------------------------------------------------

    @property
    def port(self) -> str:
        """The pty slave path, e.g. /dev/pts/5 (`mpremote connect <port> ...`)."""
        if self._port is None:
            raise RuntimeError("the board is not started")
        return self._port.path

    @property
    def phase(self) -> Phase:
        """What the board is doing: booting, at a prompt (IDLE), running code, halted."""
        return self._phase

    @property
    def boot_count(self) -> int:
        """Number of MicroPython processes started so far (power-on, every soft or hard reset)."""
        return self._boot_count

    @property
    def stats(self) -> dict[str, int]:
        """Counters: resets, crashes, interrupts, input dropped, code rejected, output with no listener."""
        if self._repl is None or self._port is None:
            return {}
        return {**self._repl.stats, "tx_dropped_unplugged": self._port.dropped_unplugged}

    def start(self) -> None:
        """Power on: create the port, start the VM (boot.py, main.py) and the event loop."""
        if self._thread is not None:
            raise RuntimeError("the board is already started")
        self._port = PtyPort()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._repl = BoardRepl(self._spawn, self._port.write, self._note_phase, self.max_code)
        try:
            self._repl.power_on()
        except BaseException:  # e.g. no micropython launcher: leave nothing open behind
            self._close_handles()
            raise
        self._thread = threading.Thread(target=self._loop, name=f"vboard {self._port.path}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Power off: kill the VM, close the port. The flash directory is left as it is."""
        if self._thread is None:
            return
        if self._thread.is_alive():  # a loop that failed has already shut the VM down (and logged why)
            self._command("stop")
            self._thread.join(timeout=10)
        self._thread = None
        self._close_handles()

    def _close_handles(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r, self._wake_w = -1, -1
        if self._port is not None:
            self._port.close()
            self._port = None

    def power_cycle(self) -> None:
        """Cut and restore power: a new VM, friendly REPL, boot.py then main.py; input in flight is lost."""
        self._command("power_cycle")

    def wait_for_prompt(self, timeout: float) -> bool:
        """Wait until the board sits at a REPL prompt (boot finished, no code running)."""
        with self._phase_changed:
            return self._phase_changed.wait_for(lambda: self._phase is Phase.IDLE, timeout)

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- event loop (board thread) -----------------------------------------------------------------

    def _command(self, name: str) -> None:
        """Hand a command to the loop thread and wait until it is carried out."""
        if self._thread is None:
            raise RuntimeError("the board is not started")
        done = threading.Event()
        self._commands.put((name, done))
        os.write(self._wake_w, b"\x00")
        if not done.wait(timeout=10):
            raise TimeoutError(f"virtual board did not carry out {name!r}")

    def _spawn(self, reset_cause: int) -> MicroPythonVM:
        self._boot_count += 1
        return MicroPythonVM(self.flash_dir, self.heap, reset_cause, self.micropython, RX_LIMIT, self.rom_partition)

    def _note_phase(self, phase: Phase) -> None:
        with self._phase_changed:
            self._phase = phase
            self._phase_changed.notify_all()

    def _loop(self) -> None:
        assert self._port is not None and self._repl is not None
        port, repl = self._port, self._repl
        try:
            while self._serve_once(port, repl):
                pass
        except Exception:
            log.exception("virtual board %s: event loop failed", port.path)
            raise
        finally:
            repl.shutdown()

    def _serve_once(self, port: PtyPort, repl: BoardRepl) -> bool:
        """One poll round; False once the board is told to stop."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        listener = port.listener_present()
        if listener:
            poller.register(port.master_fd, select.POLLIN | (select.POLLOUT if port.wants_write() else 0))
        vm = repl.vm
        if vm is not None:
            poller.register(vm.control_fd, select.POLLIN)
            if not port.backed_up() and vm.output_open:
                poller.register(vm.output_fd, select.POLLIN)
            if vm.wants_write():
                poller.register(vm.code_fd, select.POLLOUT)
            if vm.wants_input_write():
                poller.register(vm.stdin_fd, select.POLLOUT)
        ready = dict(poller.poll(None if listener else UNPLUGGED_RECHECK_MS))
        if self._wake_r in ready and not self._run_commands(repl):
            return False
        # The VM before the host: a kbd_intr() change must be known before the input that follows it.
        # A reset replaces the VM and closes the old pipes: their fds in `ready` are then stale.
        if vm is not None and repl.vm is vm:
            if vm.code_fd in ready:
                vm.flush_code()
            if vm.stdin_fd in ready:
                vm.flush_input()
            if vm.output_fd in ready:
                repl.on_output(vm.read_output())
            if vm.control_fd in ready:
                repl.on_events(vm.read_events())
        if listener and port.master_fd in ready:
            if ready[port.master_fd] & select.POLLOUT:
                port.flush()
            if ready[port.master_fd] & (select.POLLIN | select.POLLHUP):
                data = port.read()
                if data:
                    repl.receive(data)
        return True

    def _run_commands(self, repl: BoardRepl) -> bool:
        try:
            while len(os.read(self._wake_r, 64)) == 64:
                pass
        except BlockingIOError:
            pass
        keep_running = True
        while True:
            try:
                name, done = self._commands.get_nowait()
            except queue.Empty:
                return keep_running
            if name == "power_cycle":
                repl.power_on()
            elif name == "stop":
                keep_running = False
            done.set()
