"""A board's files and REPL through the real `mpremote`, with its failures turned into plain words.

Each call runs `mpremote connect PORT ...` as a subprocess (the same program a technician would type),
with a timeout, and maps what went wrong to a StepError:
- the port does not exist: no board (cable, driver, wrong port);
- the port exists but cannot be opened: busy (another program holds it) or no permission;
- nothing answers like MicroPython, or nothing answers in time: no MicroPython, or the application is
  asleep or wedged;
- the board raised an error while writing: the file and the board's own error.

`inventory()` runs one small script on the board that hashes (sha256, on the board) every file of the
firmware's folder and the root files the tools own, reads the id in the board's `/config.json` and its
boot counter, and, on a MicroPython build with a ROM partition (`vfs.rom_ioctl`), hashes the ROMFS image
in it, so a flash knows what is there before writing anything.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.tools.steps import StepError

TIMEOUT_S = 30.0  # for one mpremote session; a write adds WRITE_S_PER_FILE per file
WRITE_S_PER_FILE = 2.0
QUIET_ATTEMPTS = 10  # Ctrl-C at most this often, QUIET_WAIT_S apart, before handing over to mpremote
QUIET_WAIT_S = 0.3
NO_ANSWER_FIX = ("if the board has no MicroPython yet, run `kerbline device install-micropython`; if its "
                 "application is asleep or hung, hold BOOT while pressing RESET (the application then stays "
                 "off) or replug the board; then retry")
_MARK = "KL "
# Runs under MicroPython on the board: one line per file, folder, root file; nothing else printed.
_INVENTORY = """
import os, hashlib, binascii, json
def _h(p):
    h = hashlib.sha256()
    b = bytearray(256)
    m = memoryview(b)
    with open(p, "rb") as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
def _f(p):
    try:
        print("KL F", _h(p), p[1:])
    except OSError as e:
        print("KL X", p[1:])
def _w(d):
    for e in os.ilistdir(d):
        p = d + "/" + e[0]
        if e[1] & 0x4000:
            print("KL D", p[1:])
            _w(p)
        else:
            _f(p)
try:
    _w("/kerbline")
except OSError:
    pass
for e in os.ilistdir("/"):
    if e[1] & 0x4000:
        if e[0] == "kerbline":
            print("KL D kerbline")
    else:
        print("KL R", e[0])
        if e[0] in ("boot.py", "main.py", "config.json", "boot.cnt"):
            _f("/" + e[0])
try:
    with open("/config.json") as f:
        c = json.load(f)
    print("KL I", c.get("id", "?") if isinstance(c, dict) else "?")
except OSError:
    print("KL I -")
except ValueError:
    print("KL I ?")
try:
    with open("/boot.cnt") as f:
        print("KL B", f.read(16).strip() or "?")
except OSError:
    print("KL B -")
try:
    import vfs
    d = vfs.rom_ioctl(2, 0) if vfs.rom_ioctl(1) > 0 else None
except (AttributeError, OSError):
    d = None
if isinstance(d, memoryview):
    n = 0
    i = 3
    if bytes(d[:3]) == b"\\xd2\\xcd\\x31":
        while i < len(d):
            v = d[i]
            i += 1
            n = (n << 7) | (v & 0x7F)
            if not v & 0x80:
                break
        n += i
    h = hashlib.sha256()
    for j in range(0, n if n <= len(d) else 0, 256):
        h.update(d[j:min(j + 256, n)])
    print("KL M", len(d), binascii.hexlify(h.digest()).decode() if 3 < n <= len(d) else "-")
"""


@dataclass
class Inventory:
    """What a board holds: sha256 by path (None: unreadable), folders, root files, its config's id."""

    files: dict[str, str | None] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    root: set[str] = field(default_factory=set)
    config_id: str | None = None  # None: no /config.json; "?": one that does not parse
    boot_count: str | None = None  # /boot.cnt as text, None when absent
    rom_size: int | None = None  # bytes of the ROM partition; None: the build has none
    rom_sha256: str | None = None  # of the ROMFS image in it; None: no image


def mpremote_path() -> str:
    """The mpremote next to the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpremote")
    return str(beside) if beside.exists() else (shutil.which("mpremote") or "mpremote")


class BoardFs:
    """One board on one serial port, reached with mpremote."""

    def __init__(self, port: str, mpremote: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.port = port
        self.mpremote = mpremote or mpremote_path()
        self.timeout = timeout

    def run(self, args: Sequence[str], doing: str, on_line: Callable[[str], None] | None = None,
            timeout: float | None = None) -> str:
        """Run `mpremote connect PORT args...`; its stdout, or a StepError saying what went wrong."""
        self.check_port()
        argv = [self.mpremote, "connect", self.port, *args]
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty stderr cannot block the process
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True,
                                    errors="replace", start_new_session=True)
        except OSError as exc:
            errors.close()
            raise StepError(f"cannot run mpremote ({exc.strerror})",
                            "install the tools' Python environment again (pip install kerbline)") from None
        out: list[str] = []
        try:
            assert proc.stdout is not None
            with _Deadline(proc, timeout or self.timeout):
                for line in proc.stdout:
                    out.append(line)
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
                proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errors.seek(0)
            err = errors.read().decode("utf-8", "replace")
            errors.close()
        stdout = "".join(out)
        if proc.returncode == -9:
            raise StepError(f"no answer from the board on {self.port} within {timeout or self.timeout:g} s "
                            f"while {doing}", NO_ANSWER_FIX)
        if proc.returncode != 0:
            raise self._failure(doing, stdout, err)
        return stdout

    def check_port(self) -> None:
        if not os.path.exists(self.port):
            raise StepError(f"no board: {self.port} does not exist",
                            "plug the board in with a data USB cable and pick its port from `kerbline device ports`")

    def _failure(self, doing: str, stdout: str, stderr: str) -> StepError:
        text = (stderr.strip() or stdout.strip()).splitlines()
        last = text[-1] if text else "(no message)"
        if "failed to access" in stderr:
            if not os.access(self.port, os.R_OK | os.W_OK):
                return StepError(f"no permission to open {self.port}",
                                 "add your user to the port's group (usually `dialout`) and log in again")
            return StepError(f"{self.port} is busy: another program has it open",
                             f"close the other program (a monitor, screen, Thonny, the gateway); "
                             f"`fuser {self.port}` shows which one")
        if "could not enter raw repl" in stderr or "timeout waiting" in stderr or "could not exec" in stderr:
            return StepError(f"no MicroPython answered on {self.port} while {doing}", NO_ANSWER_FIX)
        board_error = _board_error(stdout)
        if board_error:
            return StepError(f"the board failed while {doing}: {board_error}",
                             "see the error's meaning in docs/technician.md; reinstall MicroPython if the "
                             "filesystem is damaged")
        if last.startswith("mpremote: "):
            last = last[len("mpremote: "):]
        return StepError(f"the board refused while {doing}: {last}",
                         "the board's filesystem may be full or damaged: check free space with "
                         f"`mpremote connect {self.port} df`; reinstall MicroPython if it is damaged")

    # ------------------------------------------------------------------ operations

    def quiet(self, attempts: int = QUIET_ATTEMPTS, wait_s: float = QUIET_WAIT_S) -> bool:
        """Stop the application before mpremote takes over: Ctrl-C until the REPL prompt shows.

        mpremote sends one Ctrl-C. Right after a reset that one can land in boot.py, and then main.py
        starts the application all the same; mpremote then waits on a board that never answers. Here
        Ctrl-C is repeated until `>>> ` appears (True), at most `attempts` times. False (no prompt, a
        busy port) is not an error: mpremote then reports what is wrong.
        """
        import serial  # type: ignore[import-untyped]  # pyserial ships no stubs

        self.check_port()
        port = serial.Serial()
        port.port, port.baudrate, port.timeout, port.exclusive = self.port, 115200, 0.05, True
        port.dtr = port.rts = False  # on ESP32 boards these drive EN and GPIO0: opening must not reset it
        try:
            port.open()
        except (OSError, serial.SerialException):
            return False
        try:
            for _ in range(attempts):
                port.write(b"\r\x03")
                seen = b""
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    seen = (seen + port.read(256))[-64:]
                    if seen.endswith(b">>> "):
                        return True
            return False
        finally:
            port.close()

    def inventory(self) -> Inventory:
        self.quiet()
        out = self.run(["exec", _INVENTORY], "reading what the board holds")
        inv = Inventory()
        for line in out.splitlines():
            if not line.startswith(_MARK):
                continue
            kind, _, rest = line[len(_MARK):].rstrip("\r").partition(" ")
            if kind == "F":
                digest, _, path = rest.partition(" ")
                inv.files[path] = digest
            elif kind == "X":
                inv.files[rest] = None
            elif kind == "D":
                inv.dirs.add(rest)
            elif kind == "R":
                inv.root.add(rest)
            elif kind == "I":
                inv.config_id = None if rest == "-" else rest
            elif kind == "B":
                inv.boot_count = None if rest == "-" else rest
            elif kind == "M":
                size, _, digest = rest.partition(" ")
                inv.rom_size, inv.rom_sha256 = int(size), None if digest == "-" else digest
        return inv

    def write(self, mkdirs: Sequence[str], copies: Sequence[tuple[Path, str]], removes: Sequence[str],
              on_copy: Callable[[int, str], None]) -> None:
        """Make folders, copy files (local path, board path), remove files, in one mpremote session."""
        args: list[str] = []
        for path in mkdirs:
            args += ["+", "fs", "mkdir", f":{path}"]
        for local, remote in copies:
            args += ["+", "fs", "cp", "-f", str(local), f":{remote}"]
        for path in removes:
            args += ["+", "fs", "rm", f":{path}"]
        if not args:
            return
        by_local = {f"cp {local} :{remote}": remote for local, remote in copies}
        count = 0

        def line(text: str) -> None:
            nonlocal count
            if text in by_local:
                count += 1
                on_copy(count, by_local[text])

        self.run(args[1:], "writing files", on_line=line, timeout=self.timeout + WRITE_S_PER_FILE * len(copies))

    def deploy_rom(self, image: Path) -> None:
        """Write a ROMFS image (a `.romfs` file) into the board's ROM partition with `mpremote romfs deploy`."""
        self.run(["romfs", "deploy", str(image)], "writing the ROM partition",
                 timeout=self.timeout + WRITE_S_PER_FILE * (1 + image.stat().st_size // 4096))

    def reset(self) -> None:
        self.run(["reset"], "resetting the board")

    def run_file(self, script: Path, on_line: Callable[[str], None], timeout: float) -> str:
        """Run a host file's code on the board (raw REPL), streaming what it prints."""
        self.quiet()
        return self.run(["run", str(script)], "running the self-test", on_line=on_line, timeout=timeout)


def _board_error(stdout: str) -> str | None:
    """The last line of a MicroPython traceback in mpremote's output, if there is one."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if "Traceback (most recent call last):" not in lines:
        return None
    return lines[-1]


class _Deadline:
    """Kill the process when the timeout passes (reading its output must not hang forever)."""

    def __init__(self, proc: subprocess.Popen[str], timeout: float) -> None:
        import threading

        self._timer = threading.Timer(timeout, self._kill, args=(proc,))
        self._timer.daemon = True

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
