# `vfs` on a virtual board that has a ROM partition: the built-in module plus `rom_ioctl`, which
# `mpremote romfs query|deploy` drive. MicroPython code (unix port), not firmware; vboard_driver.py
# installs it as sys.modules["vfs"] when the board has a partition, so code on the board sees a ROMFS-
# enabled build. The partition is a host file (the board's flash) held in memory as a board maps it
# (simulator/devices/mpy/rom_partition.py); writes go to both, so they survive a reset.
from vfs import *  # noqa: F401,F403  (mount, umount, VfsRom, VfsPosix, ...)

BLOCK = 4096  # an ESP32 flash sector: erase granularity
MIN_WRITE = 4
_ENODEV = -19
_EINVAL = -22

_part = None
_path = None
_host = None  # the host's filesystem: the board's own "/" is its flash directory


def _attach(partition, path):
    global _part, _path, _host
    _part = partition
    _path = path
    _host = VfsPosix()  # noqa: F405


def _store(offset, data):
    _part[offset:offset + len(data)] = data
    with _host.open(_path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def rom_ioctl(op, *args):
    if op == 1:  # how many partitions
        return 0 if _part is None else 1
    if _part is None or not args or args[0] != 0:
        return _ENODEV
    if op == 2:  # the partition, memory-mapped
        return memoryview(_part)
    if op == 6:  # erase block size
        return BLOCK
    if op == 3:  # prepare (erase): (id, length) from 0, or (id, offset, length)
        offset, length = (args[1], args[2]) if len(args) == 3 else (0, args[1])
        end = offset + (length + BLOCK - 1) // BLOCK * BLOCK
        if offset % BLOCK or end > len(_part):
            return _EINVAL
        _store(offset, b"\xff" * (end - offset))
        return MIN_WRITE
    if op == 4:  # write: (id, offset, data)
        offset, data = args[1], args[2]
        if offset % MIN_WRITE or offset + len(data) > len(_part):
            return _EINVAL
        _store(offset, data)
        return 0
    if op == 5:  # write complete
        return 0
    return _EINVAL
