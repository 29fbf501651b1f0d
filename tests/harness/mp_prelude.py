# Runs first inside every MicroPython VM the harness starts (tests/harness/micropython.py), then runs the
# test's script. It is MicroPython code for the unix port, not firmware.
#
# argv: prelude.py SCRIPT NAME VFS_ROOT FIRMWARE [ARGS...]
#   SCRIPT: host path of the program; NAME: its name in tracebacks and sys.argv[0].
#   VFS_ROOT "": keep the host filesystem; else mount that directory at "/" like a board's flash.
#   FIRMWARE "": no firmware on sys.path; else the host folder holding the `kerbline` package.
# (The unix port aborts on command-line arguments of 256 bytes or more, so the program travels as a file.)
import sys
import os
import vfs
import gc


def _normalise(cwd, path):
    # Resolve "." and ".." the way a chroot does: ".." at the root stays at the root.
    if not path.startswith("/"):
        path = cwd + "/" + path
    parts = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


class RootedVfs:
    # VfsPosix joins its root and the path as text, so "/../x" would reach the root's parent; this
    # wrapper hands it only normalised absolute paths, which keeps the script inside the root.
    def __init__(self, root):
        self._fs = vfs.VfsPosix(root)
        self._cwd = "/"

    def _p(self, path):
        return _normalise(self._cwd, path)

    def mount(self, readonly, mkfs):
        self._fs.mount(readonly, mkfs)

    def umount(self):
        self._fs.umount()

    def open(self, path, mode):
        return self._fs.open(self._p(path), mode)

    def ilistdir(self, path):
        return self._fs.ilistdir(self._p(path))

    def stat(self, path):
        return self._fs.stat(self._p(path))

    def statvfs(self, path):
        return self._fs.statvfs(self._p(path))

    def mkdir(self, path):
        self._fs.mkdir(self._p(path))

    def rmdir(self, path):
        self._fs.rmdir(self._p(path))

    def remove(self, path):
        self._fs.remove(self._p(path))

    def rename(self, old, new):
        self._fs.rename(self._p(old), self._p(new))

    def chdir(self, path):
        path = self._p(path)
        if not self._fs.stat(path)[0] & 0x4000:
            raise OSError(20)  # ENOTDIR
        self._cwd = path

    def getcwd(self):
        return self._cwd


def _main():
    script, name, root, firmware = sys.argv[1:5]
    args = sys.argv[5:]
    with open(script) as f:
        source = f.read()
    script_dir = script.rsplit("/", 1)[0] if "/" in script else ""
    if root:
        vfs.umount("/")
        vfs.mount(RootedVfs(root), "/")
        os.chdir("/")
        path = ["", ".frozen", "/lib"]
        if firmware:
            vfs.mount(RootedVfs(firmware), "/.firmware", readonly=True)
            path.append("/.firmware")
    else:
        path = [script_dir, ".frozen"]
        if firmware:
            path.append(firmware)
    sys.path[:] = path
    sys.argv[:] = [name] + args
    code = compile(source, name, "exec")
    return code


_code = _main()
del _main
gc.collect()
exec(_code, {"__name__": "__main__"})
