# The first code a faithful device's MicroPython process runs (unix port; MicroPython code, not firmware):
#   micropython -X heapsize=N device_main.py FLASH_DIR
# It makes FLASH_DIR the whole filesystem, as the flash is on an ESP32, then runs /boot.py and /main.py
# from it in one globals dict, as the board's start-up does. Everything after that is the firmware on
# the `sim` board; the process ends by its exit code (kerbline/board/sim.py: 64 deep sleep, 65 reset).
import sys
import os
import vfs


class _Flash:
    # VfsPosix(root), except rename: in unix port 1.28, VfsPosix(root).rename on two absolute paths
    # fails (both paths share one buffer), so rename goes through a root-less VfsPosix on host paths.
    # A wrapper, not a subclass: the import system does not find modules through a VfsPosix subclass.
    def __init__(self, root):
        self._fs = vfs.VfsPosix(root)
        self._root = root.rstrip("/")

    def mount(self, readonly, mkfs):
        self._fs.mount(readonly, mkfs)

    def umount(self):
        self._fs.umount()

    def open(self, path, mode):
        return self._fs.open(path, mode)

    def ilistdir(self, path):
        return self._fs.ilistdir(path)

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
        vfs.VfsPosix().rename(self._root + old, self._root + new)

    def chdir(self, path):
        self._fs.chdir(path)

    def getcwd(self):
        return self._fs.getcwd()


def _mount(root):
    vfs.umount("/")
    vfs.mount(_Flash(root), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    sys.argv[:] = []


_mount(sys.argv[1])
del _mount
_g = {"__name__": "__main__"}
for _name in ("boot.py", "main.py"):
    try:
        with open("/" + _name) as _f:
            _code = compile(_f.read(), _name, "exec")
    except OSError:
        continue
    exec(_code, _g)
    _code = None
