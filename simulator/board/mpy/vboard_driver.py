# The MicroPython half of the virtual board: one unix-port process per boot of the board runs this script.
# MicroPython code (unix port), not firmware. The CPython half (simulator/board/vm.py) starts it as
#   micropython -X heapsize=N vboard_driver.py
# with the environment variables below, and then talks to it over two pipes:
#
# code pipe (board -> here), one frame per piece of code:
#   kind(1) seq(u16 LE) length(u32 LE) payload
#   kind b"x": payload is source run as a file (raw REPL, paste mode); its name in tracebacks is <stdin>
#   kind b"s": payload is one friendly-REPL input, compiled "single" so expression values are printed
#   kind b"f": payload is a file name (boot.py, main.py); runs it if it exists, like pyexec_file_if_exists
# control pipe (here -> board), small frames, each written with one write() (< PIPE_BUF, so atomic):
#   kind(1) seq(u16 LE) flags(1) length(u16 LE) payload
#   b"H": hello, payload is the banner text; b"A": code `seq` starts running (Ctrl-C may be sent now);
#   b"D": code `seq` finished, flags bit 0 = it raised SystemExit (the board soft-reboots), payload is
#   the traceback text (empty when none); b"R": machine.reset() was called (sent by vboard_machine);
#   b"K": micropython.kbd_intr(c) was called, flags = c & 0xFF (sent by vboard_micropython).
# Everything the code prints goes to this process's stdout, which the board forwards to the serial port;
# what the host types while code runs arrives on stdin.
# A done frame is written only after all output of that code, so the board can frame the two sections.
#
# Ctrl-C arrives as SIGINT and becomes KeyboardInterrupt. The board sends it only between "A" and "D";
# one that lands just after the code finished is absorbed in _wait_frame() before the next frame is read.
import sys
import io
import os
import gc
import vfs
import select
import struct

_MAX_TEXT = 4000  # traceback bytes in one "D" frame: frame stays under PIPE_BUF (4096) so writes are atomic
_EXEC_FILE = 0x78  # b"x"
_RUN_FILE = 0x66  # b"f"
_HELLO = 0x48  # b"H"
_ACK = 0x41  # b"A"
_DONE = 0x44  # b"D"
_TRACE_SELF = '  File "' + __file__ + '"'


def _send(ctl, kind, seq, flags, payload):
    ctl.write(struct.pack("<BHBH", kind, seq, flags, len(payload)) + payload)


def _read_exact(src, n):
    # A blocking stream's read(n) keeps reading until it has n bytes or the pipe closes.
    data = src.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _skip(src, n):
    # Consume a frame too large for the heap, in small pieces.
    scratch = bytearray(256)
    while n:
        chunk = src.readinto(memoryview(scratch)[:min(n, 256)])
        if not chunk:
            raise EOFError
        n -= chunk


def _settle():
    # A stray SIGINT (sent just as the previous code finished) is raised at a backward jump; let it
    # surface here, inside the caller's try, rather than halfway through reading the next frame.
    n = 0
    while n < 2:
        n += 1


def _wait_frame(src, poller):
    while True:
        try:
            poller.poll()
            _settle()
            return
        except KeyboardInterrupt:
            pass


def _format(err):
    try:
        gc.collect()
        out = io.StringIO()
        sys.print_exception(err, out)
        lines = [line for line in out.getvalue().split("\n") if not line.startswith(_TRACE_SELF)]
        text = "\n".join(lines).encode()
    except MemoryError:
        text = (type(err).__name__ + ": \n").encode()
    if len(text) > _MAX_TEXT:
        text = text[:200] + b"\n...\n" + text[-(_MAX_TEXT - 205):]
    return text


def _run(ctl, glob, kind, seq, payload):
    err = None
    forced = 0
    try:
        _send(ctl, _ACK, seq, 0, b"")
        if kind == _RUN_FILE:
            name = str(payload, "utf8")
            payload = None
            try:
                is_file = os.stat(name)[0] & 0x8000
            except OSError:
                is_file = False
            if is_file:
                with open(name, "rb") as f:
                    source = f.read()
                glob["__file__"] = name
                code = compile(source, name, "exec")
                source = None
                exec(code, glob)
        else:
            if kind == _EXEC_FILE:
                glob["__file__"] = "<stdin>"
            code = compile(payload, "<stdin>", "exec" if kind == _EXEC_FILE else "single")
            payload = None
            exec(code, glob)
    except SystemExit:
        forced = 1
    except BaseException as e:  # KeyboardInterrupt included: it is reported like any other error
        err = e
    code = None
    _finish(ctl, seq, err, forced)


def _finish(ctl, seq, err, forced):
    text = None
    while True:
        try:
            if text is None:
                text = _format(err) if err is not None else b""
            _send(ctl, _DONE, seq, forced, text)
            return
        except KeyboardInterrupt as e:
            # Interrupted after the code ended: report it as the code's interruption if nothing else
            # was; a repeated "D" for the same seq is ignored by the board.
            if text is None and err is None:
                err = e


def _serve(src, ctl):
    glob = {"__name__": "__main__"}
    poller = select.poll()
    poller.register(src, select.POLLIN)
    while True:
        _wait_frame(src, poller)
        try:
            header = _read_exact(src, 7)
        except EOFError:
            return
        kind, seq, length = struct.unpack("<BHI", header)
        try:
            payload = _read_exact(src, length)
        except MemoryError:
            _skip(src, length)
            _send(ctl, _ACK, seq, 0, b"")
            _finish(ctl, seq, MemoryError("code of %d bytes does not fit in the heap" % length), 0)
            continue
        _run(ctl, glob, kind, seq, payload)
        payload = None


class _Flash:
    # The flash directory as the board's filesystem: a VfsPosix, except that ilistdir adds the file size
    # as littlefs and FAT (what a board has) do, and `mpremote fs ls` shows it. A wrapper, not a
    # subclass: the import system does not find modules through a VfsPosix subclass.
    def __init__(self, root):
        self._fs = vfs.VfsPosix(root)
        self._root = root.rstrip("/")

    def ilistdir(self, path):
        base = path if not path or path.endswith("/") else path + "/"
        for entry in self._fs.ilistdir(path):
            size = self._fs.stat(base + entry[0])[6] if entry[1] == 0x8000 else 0
            yield (entry[0], entry[1], entry[2], size)

    def mount(self, readonly, mkfs):
        self._fs.mount(readonly, mkfs)

    def umount(self):
        self._fs.umount()

    def open(self, path, mode):
        return self._fs.open(path, mode)

    def stat(self, path):
        return self._fs.stat(path)

    def statvfs(self, path):
        return self._fs.statvfs(path)

    def mkdir(self, path):
        self._fs.mkdir(path)

    def rmdir(self, path):
        self._fs.rmdir(path)

    def remove(self, path):
        self._fs.remove(path)

    def rename(self, old, new):
        # VfsPosix(root).rename fails on two absolute paths (unix port 1.28: the second path overwrites the
        # first in a shared buffer), so rename through a root-less VfsPosix on host paths, as
        # tests/harness/mp_rooted_vfs.py does.
        vfs.VfsPosix().rename(self._host(old), self._host(new))

    def _host(self, path):
        if not path.startswith("/"):
            path = self._fs.getcwd().rstrip("/") + "/" + path
        return self._root + path

    def chdir(self, path):
        self._fs.chdir(path)

    def getcwd(self):
        return self._fs.getcwd()


_ROM = []  # the ROM partition's bytes and the ballast (rom_partition.mount), for the whole boot


def _main():
    src = open("/proc/self/fd/" + os.getenv("VBOARD_CODE_FD"), "rb")
    ctl = open("/proc/self/fd/" + os.getenv("VBOARD_CTL_FD"), "wb")
    import vboard_machine
    import vboard_micropython

    vboard_machine._attach(ctl, int(os.getenv("VBOARD_RESET_CAUSE")))
    vboard_micropython._attach(ctl)
    sys.modules["machine"] = vboard_machine
    sys.modules["micropython"] = vboard_micropython
    path = ["", ".frozen", "/lib"]
    rom = os.getenv("VBOARD_ROM")
    if rom:
        # A ROMFS-enabled build: the partition mapped (and mounted at /rom when it holds an image) before
        # anything else takes heap, `vfs.rom_ioctl` for the tools that write it.
        import rom_partition
        import vboard_vfs

        _ROM.extend(rom_partition.mount(rom, int(os.getenv("VBOARD_APP_HEAP"))))
        vboard_vfs._attach(_ROM[0], rom)
        del sys.modules["rom_partition"]
        sys.modules["vfs"] = vboard_vfs
        path[2:2] = ["/rom", "/rom/lib"]
    # The board's flash directory becomes the whole filesystem, as littlefs is on an ESP32.
    vfs.umount("/")
    vfs.mount(_Flash(os.getenv("VBOARD_ROOT")), "/")
    os.chdir("/")
    sys.path[:] = path
    sys.argv[:] = []
    version = sys.version.split("; ", 1)[-1]
    banner = version + "; Kerbline virtual board with " + sys.implementation._machine
    _send(ctl, _HELLO, 0, 0, banner.encode())
    return src, ctl


_serve(*_main())
