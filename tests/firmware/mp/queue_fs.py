"""Flash stand-ins for the flash queue's tests (MicroPython and CPython): real files, but the power can go.

`CutFlash(budget)` loses power after `budget` write steps: one step per byte written, one per rename or
remove. The write that runs out puts only its bytes before the cut on flash and raises `PowerCut`;
every later write, rename or remove raises at once, as nothing reaches the flash of a dead device.
`budget=None` never cuts and counts the steps (`steps`). `FatFlash` refuses to rename onto an existing
file, as FAT does.

`record(flags, boot, seq, message)` builds a queue record from the documented layout with the tests'
own packing, to plant torn, damaged or look-alike records in a log.
"""
import os
import struct

from kerbline.store.queue import Flash
from kerbline.wire.crc16 import crc16


class PowerCut(Exception):
    """The power went: nothing more reaches the flash."""


class CutFlash(Flash):
    def __init__(self, budget):
        self.left = budget
        self.steps = 0

    def _take(self, n):
        k = n if self.left is None else min(n, self.left)
        if self.left is not None:
            self.left -= k
        self.steps += k
        return k

    def open(self, path, mode):
        f = open(path, mode)
        return f if "r" in mode else _CutFile(f, self)

    def rename(self, old, new):
        if not self._take(1):
            raise PowerCut()
        os.rename(old, new)

    def remove(self, path):
        if not self._take(1):
            raise PowerCut()
        os.remove(path)


class _CutFile:
    def __init__(self, f, flash):
        self._f = f
        self._flash = flash

    def write(self, data):
        n = len(data)
        k = self._flash._take(n)
        if k:
            self._f.write(bytes(data[:k]))
        if k < n:
            self._f.close()
            raise PowerCut()
        return n

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class FatFlash(Flash):
    def rename(self, old, new):
        if self.size(new) >= 0:
            raise OSError(17)  # EEXIST
        os.rename(old, new)


def record(flags, boot, seq, message):
    head = struct.pack(">BBHII", 0x4B, flags, len(message), boot, seq)
    return head + struct.pack(">H", crc16(message, crc16(head))) + message


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write(path, data):
    if data is None:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    with open(path, "wb") as f:
        f.write(data)
