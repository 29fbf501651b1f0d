"""A faithful device's power supply and reset circuit: it runs one MicroPython process per boot, forever.

One boot is `micropython -X heapsize=VM_HEAP device_main.py` run in FLASH_DIR: the unchanged firmware on
the `sim` board (`firmware/kerbline/board/sim.py`), its paths relative to the flash directory as a board's
are to its flash root. The firmware is deployed as on a board with a ROM partition: the package's `.mpy`
modules are in a ROMFS image (`rom`, `gateway.tools.firmware_build.romfs_image`, one file that every
device of a street reads), which the launcher mounts at /rom before boot.py runs
(`mpy/rom_partition.py`); the flash directory holds only boot.py, main.py, config.json and the device's
state. How the process ends says what happens next, as the board's exit codes define it:

  64 (deep sleep over)      boot again at once: the wake (the sleep itself was served by the sensor server)
  65 (machine.reset())      boot again at once
  killed by SIGKILL         the watchdog fired (the board's watchdog thread kills its own process): boot again
  0                         the program ended (safe mode, a skip-pin boot): the board sits at its REPL;
                            no restart until power is cycled
  anything else             the VM itself died (a MemoryError outside the firmware's crash net, a C-level
                            abort): boot again after `CRASH_PAUSE_S`; after `MAX_CRASHES` such deaths in a
                            row the device is left off (`halted`) rather than spin

Power: `power_off()` kills the process at whatever instruction it is on (SIGKILL, as a cut supply does)
and clears what does not survive a power cut: RTC memory (`/.rtc`), the RTC clock (`/.clock`) and the
reset-cause note (`/.reset`), so the next boot's reset cause is a power-on. `power_on()` boots it again;
`brownout()` is both at once. The flash directory (boot counter, queue, cid, config) is kept, which is the
point: a cut at any moment must lose nothing that was on flash.

Heap: `DEFAULT_HEAP` is 64 KB, the firmware's budget (held by its tests on the same 64-bit unix port,
where objects take more room than on the ESP32's 32-bit heap, so it is the stricter of the two). On a
board the ROM's bytecode runs in place in flash; the unix port has to read the image into the VM's heap,
so the VM is started bigger by the image (`simulator.devices.rom.rom_heap`: `vm_heap`) and the launcher
takes any surplus as ballast: the program gets exactly the usable heap of a `heap` VM (`app_heap`), no
more. A firmware that does not fit dies of MemoryError, as it would on the board.

Console: each process's output goes, line by line, to `on_line` and to `console.log` in the flash
directory's parent (at most `LOG_MAX_BYTES`; lines past it are counted in `log_dropped`), and the last
`TAIL_LINES` lines are kept in `tail` for error messages.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gateway.tools.firmware_build import micropython_path
from simulator.devices.rom import rom_heap

EXIT_DEEPSLEEP = 64
EXIT_RESET = 65
LAUNCHER = Path(__file__).resolve().with_name("mpy") / "device_main.py"
DEFAULT_HEAP = "64k"  # the firmware's budget: the program's usable heap, the ROM image aside (docstring)
CRASH_PAUSE_S = 1.0
MAX_CRASHES = 5
LOG_MAX_BYTES = 1 << 20
TAIL_LINES = 40
POWER_CUT_FILES = (".rtc", ".clock", ".reset")


class State(enum.Enum):
    OFF = "off"  # no power (not started yet, power cut)
    RUNNING = "running"  # a process is up
    IDLE = "idle"  # the program ended (exit 0): at the REPL until power is cycled
    HALTED = "halted"  # too many VM deaths in a row
    STOPPED = "stopped"  # the simulation is over


@dataclass
class RunnerStats:
    boots: int = 0
    deep_sleeps: int = 0
    resets: int = 0
    watchdog: int = 0
    crashes: int = 0
    power_cuts: int = 0
    brownouts: int = 0
    log_dropped: int = 0


class DeviceRunner:
    """Boots one device's flash directory, with the ROMFS image `rom` as its ROM partition, over and over.
    `await run()` until `stop()`."""

    def __init__(self, device_id: str, flash_dir: Path, rom: Path, *, heap: str = DEFAULT_HEAP,
                 micropython: Path | None = None, on_line: Callable[[str, str], None] | None = None,
                 on_boot_end: Callable[[], None] | None = None, crash_pause_s: float = CRASH_PAUSE_S) -> None:
        self.device_id = device_id
        self.flash_dir = Path(flash_dir)
        self.rom = Path(rom).resolve()
        self.heap = heap
        self.vm_heap, self.app_heap = rom_heap(heap, self.rom)
        self._env = {**os.environ, "KERBLINE_ROM": str(self.rom), "KERBLINE_APP_HEAP": str(self.app_heap)}
        self.micropython = micropython or micropython_path()
        self.on_line = on_line
        self.on_boot_end = on_boot_end  # e.g. the serial line flushes the UART's receive buffer
        self.crash_pause_s = crash_pause_s
        self.state = State.OFF
        self.stats = RunnerStats()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.last_exit: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._powered = asyncio.Event()
        self._killed = False
        self._stopping = False
        self._crashes_in_row = 0
        self._log_path = self.flash_dir.parent / f"{self.flash_dir.name}.console.log"
        self._log_bytes = 0

    # ------------------------------------------------------------------ power

    def power_on(self) -> None:
        if self.state in (State.OFF, State.IDLE, State.HALTED):
            self._crashes_in_row = 0
            self._powered.set()

    def power_off(self) -> None:
        """Cut the supply now: the process dies wherever it is; RTC memory and clock are lost."""
        self._powered.clear()
        self._kill()
        for name in POWER_CUT_FILES:
            (self.flash_dir / name).unlink(missing_ok=True)
        if self.state is not State.STOPPED:
            self.state = State.OFF

    def power_cut(self) -> None:
        self.stats.power_cuts += 1
        self.power_off()

    def brownout(self) -> None:
        """The supply dips: an instant reset that loses RTC memory, like a power cut of no duration."""
        self.stats.brownouts += 1
        self.power_off()
        self.power_on()

    def stop(self) -> None:
        """End the simulation for this device (the process is killed; `run()` returns)."""
        self._stopping = True
        self._kill()
        self.state = State.STOPPED
        self._powered.set()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._killed = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ boots

    async def run(self) -> None:
        """Boot while powered; returns after `stop()`."""
        self.power_on()
        while not self._stopping:
            await self._powered.wait()
            if self._stopping:
                break
            code = await self._boot()
            if self.on_boot_end is not None:
                self.on_boot_end()
            if self._stopping:
                break
            self._classify(code)
            if self.state is State.RUNNING and self._crashes_in_row:
                await asyncio.sleep(self.crash_pause_s)
        self.state = State.STOPPED

    async def _boot(self) -> int:
        self._killed = False
        self.state = State.RUNNING
        self.stats.boots += 1
        proc = self._proc = await asyncio.create_subprocess_exec(
            str(self.micropython), "-X", f"heapsize={self.vm_heap}", str(LAUNCHER),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=self.flash_dir, env=self._env, start_new_session=True)
        assert proc.stdout is not None
        with self._log_path.open("ab") as log:
            while True:
                try:
                    line = await proc.stdout.readline()
                except ValueError:  # a line over the stream limit: keep its start
                    line = (await proc.stdout.read(1024)) + b"...\n"
                if not line:
                    break
                self._log(log, line)
        code = await proc.wait()
        self._proc = None
        self.last_exit = code
        return code

    def _log(self, log: object, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        self.tail.append(text)
        if self.on_line is not None:
            self.on_line(self.device_id, text)
        if self._log_bytes + len(line) > LOG_MAX_BYTES:
            self.stats.log_dropped += 1
            return
        self._log_bytes += len(line)
        log.write(line)  # type: ignore[attr-defined]

    def _classify(self, code: int) -> None:
        if self._killed:  # our own kill: power_off() or stop() has set the state
            return
        if code == EXIT_DEEPSLEEP:
            self.stats.deep_sleeps += 1
            self._crashes_in_row = 0
        elif code == EXIT_RESET:
            self.stats.resets += 1
            self._crashes_in_row = 0
        elif code == -signal.SIGKILL:
            self.stats.watchdog += 1
            self._crashes_in_row = 0
        elif code == 0:
            self.state = State.IDLE
            self._powered.clear()
        else:
            self.stats.crashes += 1
            self._crashes_in_row += 1
            if self._crashes_in_row >= MAX_CRASHES:
                self.state = State.HALTED
                self._powered.clear()
