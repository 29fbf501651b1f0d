"""What the virtual board says on its serial port: the MicroPython REPL protocols, over a `MicroPythonVM`.

Mirrors a real board's `pyexec` loop (facts from MicroPython's docs and its shared/runtime/pyexec.c):

- Friendly REPL: banner, `>>> ` prompt, echo, backspace, `... ` continuation until a blank line (the
  "does it need more input" test is CPython's `codeop`, the grammar being the same), Ctrl-C cancels,
  Ctrl-D on an empty line soft-resets, Ctrl-E paste mode, Ctrl-A raw REPL, Ctrl-B banner again.
  Not modelled: history, tab completion, auto-indent, cursor movement (escape sequences are ignored).
- Raw REPL: "raw REPL; CTRL-B to exit\\r\\n>", code up to Ctrl-D, then "OK", output, \\x04, error text,
  \\x04, ">". Ctrl-D with nothing buffered soft-resets, Ctrl-C clears the buffer, Ctrl-B leaves.
- Raw-paste mode: \\x05 A \\x01 -> "R\\x01", window size (u16 LE) and \\x01; one \\x01 per window of
  bytes consumed; \\x04 ends the code and is acknowledged with \\x04; Ctrl-C aborts with
  KeyboardInterrupt. Any other sub-command gets "R\\x00".
- Soft reset ("MPY: soft reboot"): a new MicroPython process (the state is gone, the flash is not); it
  runs boot.py, then main.py only if the board was in the friendly REPL, like an ESP32's main loop.
  SystemExit from the REPL, boot.py or main.py soft-resets too. Hard reset (machine.reset(), power
  cycle): back to the friendly REPL, boot.py, main.py, banner.
- While code runs, Ctrl-C interrupts it (SIGINT, see vm.py; micropython.kbd_intr() changes or disables
  the character) and other input goes to the code's stdin, as a UART's receive buffer would hold it:
  input(), sys.stdin and `mpremote mount` read it there. Unread input waits in the stdin pipe (64 KiB)
  and then in a `RX_LIMIT`-byte queue; bytes past that are dropped and counted. What the code has not
  read when it ends goes to the REPL.
- Output: every "\\n" the code prints leaves as "\\r\\n", as a board's cooked console does.

Bounds: one piece of code (raw buffer, paste, friendly input) holds at most `max_code` bytes; past that
the rest is dropped, counted, and the code is answered with a MemoryError instead of being run. A VM
that dies on its own is reported on the console and the board reboots; after `MAX_CRASHES` in a row
without any code finishing, the board halts until it is power-cycled.
"""

from __future__ import annotations

import codeop
import enum
import logging
import struct
import warnings
from collections.abc import Callable

from simulator.board.vm import (EXEC_FILE, EXEC_SINGLE, PWRON_RESET, RUN_FILE, SOFT_RESET, Done, Event,
                                Exited, Hello, MicroPythonVM, ResetRequested)

log = logging.getLogger(__name__)

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
BACKSPACE, DELETE, ESC, TAB = 0x08, 0x7F, 0x1B, 0x09

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
PASTE_BANNER = b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
PS1, PS2 = b">>> ", b"... "
RAW_PASTE_WINDOW = 128  # MicroPython's default: half of its 256-byte stdin buffer
RX_LIMIT = 4096
MAX_CODE = 256 * 1024
MAX_CRASHES = 3
HARD_RESET = 2  # machine.reset_cause() after a crash (ESP32: panic -> HARD_RESET)


class Phase(enum.Enum):
    BOOT = "boot"            # boot.py / main.py running
    IDLE = "idle"            # at a prompt, reading input
    RUN = "run"              # code from the REPL running
    RAW_PASTE = "raw-paste"  # receiving code in raw-paste mode
    PASTE = "paste"          # friendly paste mode (Ctrl-E)
    HALTED = "halted"        # crashed MAX_CRASHES times in a row; waits for a power cycle


def cooked(data: bytes) -> bytes:
    """A board's console sends every newline the code prints as CR LF."""
    return data.replace(b"\n", b"\r\n")


def needs_more_input(source: str) -> bool:
    """Whether a friendly-REPL input is an unfinished statement (block, open bracket, continuation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return codeop.compile_command(source, "<stdin>", "single") is None
        except (SyntaxError, ValueError, OverflowError):
            return False  # let MicroPython report it


class BoardRepl:
    """The REPL state machine; the board's event loop feeds it host bytes, VM output and VM events.

    `spawn(reset_cause)` starts the VM of a new boot; `emit(bytes)` sends to the serial port.
    `on_phase` is told every phase change (the board uses it to let callers wait for a prompt).
    """

    def __init__(self, spawn: Callable[[int], MicroPythonVM], emit: Callable[[bytes], None],
                 on_phase: Callable[[Phase], None], max_code: int = MAX_CODE) -> None:
        self._spawn = spawn
        self._emit = emit
        self._on_phase = on_phase
        self.max_code = max_code
        self.vm: MicroPythonVM | None = None
        self.phase = Phase.HALTED
        self.raw = False
        self.banner = "MicroPython; Kerbline virtual board"
        self._cause = PWRON_RESET
        self._boot_file = b""
        self._rx = bytearray()
        self._line = bytearray()      # friendly: current line; raw: the code buffer
        self._pending = b""           # friendly: earlier lines of an unfinished statement
        self._code = bytearray()      # raw-paste and paste mode buffer
        self._overflow = 0            # bytes of the current code dropped past max_code
        self._window_left = 0
        self._esc = 0
        self._last = 0
        self._framed = False          # the running code answers in raw-REPL framing
        self._crashes = 0
        self.stats = {"soft_reboots": 0, "hard_resets": 0, "crashes": 0, "interrupts": 0,
                      "rx_dropped": 0, "code_too_large": 0}

    # -- resets ------------------------------------------------------------------------------------

    def power_on(self) -> None:
        """Power-on (or power cycle): a new VM in the friendly REPL, boot.py, main.py, banner."""
        self._stop_vm(keep_output=False)
        self.raw = False
        self._rx.clear()
        self._crashes = 0
        self._boot(PWRON_RESET)

    def shutdown(self) -> None:
        self._stop_vm(keep_output=False)
        self._set_phase(Phase.HALTED)

    def _hard_reset(self, cause: int) -> None:
        self.stats["hard_resets"] += 1
        self._stop_vm(keep_output=True)
        self.raw = False
        self._rx.clear()
        self._boot(cause)

    def _soft_reboot(self) -> None:
        self.stats["soft_reboots"] += 1
        unread = self.vm.reclaim_input() if self.vm is not None else b""  # a soft reset keeps the UART
        self._stop_vm(keep_output=True)
        self._emit(SOFT_REBOOT)
        self._boot(self._cause)
        self._feed_running(unread)

    def _stop_vm(self, keep_output: bool) -> None:
        if self.vm is None:
            return
        if keep_output:
            self._emit(cooked(self.vm.drain_output()))
        self.vm.kill()
        self.vm = None

    def _boot(self, cause: int) -> None:
        self._cause = cause
        self._clear_input_state()
        self.vm = self._spawn(cause)
        self._set_phase(Phase.BOOT)
        self._boot_file = b"boot.py"
        self.vm.submit(RUN_FILE, self._boot_file)

    def _clear_input_state(self) -> None:
        self._line.clear()
        self._pending = b""
        self._code.clear()
        self._overflow = 0
        self._esc = 0

    # -- from the VM -------------------------------------------------------------------------------

    def on_output(self, data: bytes) -> None:
        self._emit(cooked(data))

    def on_events(self, events: list[Event]) -> None:
        vm = self.vm
        for event in events:
            if vm is None or self.vm is not vm:
                return  # a reset replaced the VM: the rest of the batch is about the old one
            if isinstance(event, Hello):
                self.banner = event.banner
            elif isinstance(event, Done):
                self._crashes = 0
                self._emit(cooked(vm.drain_output()))
                self._rx[:0] = vm.reclaim_input()
                self._done(event)
            elif isinstance(event, ResetRequested):
                self._hard_reset(SOFT_RESET)  # ESP32: machine.reset() -> reset_cause() == SOFT_RESET
            elif isinstance(event, Exited):
                self._crashed(event.returncode)

    def _crashed(self, returncode: int | None) -> None:
        self.stats["crashes"] += 1
        self._crashes += 1
        log.warning("virtual board VM exited with %s (%d in a row)", returncode, self._crashes)
        self._stop_vm(keep_output=True)
        self._emit(b"\r\n[virtual board] MicroPython VM exited (code %s): "
                   % str(returncode).encode())
        if self._crashes >= MAX_CRASHES:
            self._emit(b"halted after %d crashes in a row; power-cycle to restart\r\n" % self._crashes)
            self._set_phase(Phase.HALTED)
            return
        self._emit(b"resetting\r\n")
        self._hard_reset(HARD_RESET)

    def _done(self, event: Done) -> None:
        if self.phase is Phase.BOOT:
            self._emit(cooked(event.traceback))
            if event.system_exit:
                self._soft_reboot()
            elif self._boot_file == b"boot.py" and not self.raw:
                self._boot_file = b"main.py"
                self.vm.submit(RUN_FILE, self._boot_file)  # type: ignore[union-attr]
            else:
                self._emit(RAW_BANNER + b">" if self.raw else self._friendly_banner() + PS1)
                self._set_phase(Phase.IDLE)
            self._resume_input()
            return
        if self._framed:
            self._emit(b"\x04" + cooked(event.traceback) + b"\x04")
        else:
            self._emit(cooked(event.traceback))
        if event.system_exit:
            self._soft_reboot()
        else:
            self._emit(b">" if self.raw else PS1)
            self._set_phase(Phase.IDLE)
        self._resume_input()

    def _friendly_banner(self) -> bytes:
        return self.banner.encode() + b"\r\nType \"help()\" for more information.\r\n"

    def _resume_input(self) -> None:
        """After a run: the REPL reads what is waiting, or the next boot file gets it as its stdin."""
        if self._consuming():
            self._pump()
        else:
            data = bytes(self._rx)
            self._rx.clear()
            self._feed_running(data)

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self._on_phase(phase)

    def _run(self, kind: int, source: bytes, framed: bool) -> None:
        self._framed = framed
        self._set_phase(Phase.RUN)
        self.vm.submit(kind, source)  # type: ignore[union-attr]

    # -- from the host -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        if self.phase is Phase.HALTED:
            return
        if self._consuming():
            self._rx += data
            self._pump()
        else:
            self._feed_running(data)

    def _feed_running(self, data: bytes) -> None:
        """Input while code runs: the interrupt character interrupts it, the rest is the code's stdin."""
        if not data or self.vm is None:
            return
        char = self.vm.interrupt_char
        interrupted = char >= 0 and char in data
        if interrupted:
            data = data.replace(bytes((char,)), b"")
        self.stats["rx_dropped"] += self.vm.feed_input(data)
        if interrupted:
            self._interrupt()

    def _consuming(self) -> bool:
        return self.phase in (Phase.IDLE, Phase.RAW_PASTE, Phase.PASTE)

    def _interrupt(self) -> None:
        self.stats["interrupts"] += 1
        if self.vm is not None:
            self.vm.interrupt()

    def _pump(self) -> None:
        data = bytes(self._rx)
        i = 0
        while i < len(data) and self._consuming():
            if self.phase is Phase.RAW_PASTE:
                i = self._raw_paste_bytes(data, i)
                continue
            self._byte(data[i])
            i += 1
        self._rx.clear()
        if self.phase is not Phase.HALTED:
            self._feed_running(data[i:])  # what came after the code is the code's input

    def _byte(self, c: int) -> None:
        if self.phase is Phase.PASTE:
            self._paste_byte(c)
        elif self.raw:
            self._raw_byte(c)
        else:
            self._friendly_byte(c)
        self._last = c

    def _append(self, buf: bytearray, data: bytes) -> None:
        room = self.max_code - len(buf)
        if len(data) > room:
            self._overflow += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        buf += data

    def _run_checked(self, kind: int, source: bytes, framed: bool) -> None:
        """Run `source`, or answer MemoryError if part of it was dropped for exceeding `max_code`."""
        if self._overflow:
            self.stats["code_too_large"] += 1
            log.warning("virtual board: code of more than %d bytes rejected (%d bytes dropped)",
                        self.max_code, self._overflow)
            text = b"MemoryError: code exceeds %d bytes\r\n" % self.max_code
            self._overflow = 0
            self._emit(b"\x04" + text + b"\x04>" if framed else text + (b">" if self.raw else PS1))
            self._set_phase(Phase.IDLE)
            return
        self._run(kind, source, framed)

    # raw REPL

    def _raw_byte(self, c: int) -> None:
        if c == CTRL_A:
            if len(self._line) == 2 and self._line[0] == CTRL_E:
                self._raw_paste_command(self._line[1])
            else:
                self._emit(RAW_BANNER + b">")
            self._line.clear()
            self._overflow = 0
        elif c == CTRL_B:
            self._line.clear()
            self._overflow = 0
            self.raw = False
            self._emit(b"\r\n" + self._friendly_banner() + PS1)
        elif c == CTRL_C:
            self._line.clear()
            self._overflow = 0
        elif c == CTRL_D:
            self._emit(b"OK")
            if not self._line and not self._overflow:
                self._emit(b"\r\n")
                self._soft_reboot()
                return
            source = bytes(self._line)
            self._line.clear()
            self._run_checked(EXEC_FILE, source, framed=True)
        else:
            self._append(self._line, bytes((c,)))

    def _raw_paste_command(self, command: int) -> None:
        if command != ord("A"):
            self._emit(b"R\x00>")
            return
        self._emit(b"R\x01" + struct.pack("<H", RAW_PASTE_WINDOW) + b"\x01")
        self._code.clear()
        self._overflow = 0
        self._window_left = RAW_PASTE_WINDOW
        self._set_phase(Phase.RAW_PASTE)

    def _raw_paste_bytes(self, data: bytes, i: int) -> int:
        """Consume raw-paste bytes from data[i:] up to and including an end marker; returns the new i."""
        end = len(data)
        for marker in (CTRL_C, CTRL_D):
            at = data.find(marker, i)
            if at != -1:
                end = min(end, at)
        chunk = data[i:end]
        self._append(self._code, chunk)
        consumed = len(chunk)
        while consumed >= self._window_left:  # one \x01 per window of bytes taken in
            consumed -= self._window_left
            self._window_left = RAW_PASTE_WINDOW
            self._emit(b"\x01")
        self._window_left -= consumed
        if end == len(data):
            return end
        self._emit(b"\x04")  # end of data acknowledged
        source = bytes(self._code)
        self._code.clear()
        if data[end] == CTRL_C:
            self._overflow = 0
            self._emit(b"\x04KeyboardInterrupt: \r\n\x04>")
            self._set_phase(Phase.IDLE)
        else:
            self._run_checked(EXEC_FILE, source, framed=True)
        return end + 1

    # friendly REPL

    def _friendly_byte(self, c: int) -> None:
        if self._esc:
            # Swallow ESC [ ... final, ESC O x: arrow keys and the like are not modelled.
            if self._esc == 1:
                self._esc = 2 if c in (ord("["), ord("O")) else 0
            elif 0x40 <= c <= 0x7E:
                self._esc = 0
            return
        at_start = not self._line and not self._pending
        if c == ESC:
            self._esc = 1
        elif c == CTRL_A and at_start:
            self.raw = True
            self._emit(b"\r\n" + RAW_BANNER + b">")
        elif c == CTRL_B and at_start:
            self._emit(b"\r\n" + self._friendly_banner() + PS1)
        elif c == CTRL_C:
            self._clear_input_state()
            self._emit(b"\r\n" + PS1)
        elif c == CTRL_D and not self._line:
            if self._pending:
                self._emit(b"\r\n")
                self._execute_friendly(self._pending)
            else:
                self._emit(b"\r\n")
                self._soft_reboot()
        elif c == CTRL_E and at_start:
            self._code.clear()
            self._overflow = 0
            self._emit(PASTE_BANNER)
            self._set_phase(Phase.PASTE)
        elif c in (BACKSPACE, DELETE):
            if self._line:
                # Remove one whole UTF-8 character.
                while self._line and (self._line.pop() & 0xC0) == 0x80:
                    pass
                self._emit(b"\x08 \x08")
        elif c == ord("\r") or (c == ord("\n") and self._last != ord("\r")):
            self._enter()
        elif c >= 0x20 and c != DELETE:
            self._append(self._line, bytes((c,)))
            self._emit(bytes((c,)))

    def _enter(self) -> None:
        self._emit(b"\r\n")
        if not self._line and not self._pending:
            self._emit(PS1)
            return
        source = self._pending + b"\n" + bytes(self._line) if self._pending else bytes(self._line)
        self._line.clear()
        if needs_more_input(source.decode("utf-8", "replace")) and not self._overflow:
            self._pending = source
            self._emit(PS2)
            return
        self._pending = b""
        self._execute_friendly(source)

    def _execute_friendly(self, source: bytes) -> None:
        self._pending = b""
        self._run_checked(EXEC_SINGLE, source + b"\n", framed=False)

    def _paste_byte(self, c: int) -> None:
        if c == CTRL_C:
            self._code.clear()
            self._overflow = 0
            self._emit(b"\r\n" + PS1)
            self._set_phase(Phase.IDLE)
        elif c == CTRL_D:
            self._emit(b"\r\n")
            source = bytes(self._code)
            self._code.clear()
            self._run_checked(EXEC_FILE, source, framed=False)
        else:
            self._append(self._code, bytes((c,)))
            self._emit(b"\r\n=== " if c == ord("\r") else bytes((c,)))
