# A board-like filesystem for the MicroPython VMs the harness starts (used by mp_prelude.py): a host
# directory mounted at "/" that the program cannot leave. MicroPython code for the unix port, not firmware.
import vfs


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
        self._root = root.rstrip("/")
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
        # VfsPosix(root).rename fails with ENOENT on two absolute paths (unix port 1.28: the second path
        # overwrites the first in a shared buffer), so rename through a root-less VfsPosix on host paths.
        vfs.VfsPosix().rename(self._root + self._p(old), self._root + self._p(new))

    def chdir(self, path):
        path = self._p(path)
        if not self._fs.stat(path)[0] & 0x4000:
            raise OSError(20)  # ENOTDIR
        self._cwd = path

    def getcwd(self):
        return self._cwd
