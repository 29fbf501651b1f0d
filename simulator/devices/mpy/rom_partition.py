# A board's ROMFS partition for the unix-port VM (MicroPython code for the unix port, not firmware).
#
# On a board built with MICROPY_VFS_ROM the partition is memory-mapped flash, mounted at /rom before
# boot.py runs, and .mpy files imported from it execute in place: their bytecode and constant strings stay
# in flash and only the function objects, module dicts and qstrs take heap. The unix port has
# `vfs.VfsRom` but no flash to map, so the partition has to sit in the VM's own heap. `mount()` makes that
# honest: the host starts the VM with a heap larger than the board's by the partition's size
# (simulator/devices/rom.py), the partition is read first, at the bottom of the heap, and a ballast then
# takes whatever is left over, so the program runs in exactly the usable heap a VM of the board's size
# has (`app_heap`, measured on the host), in one contiguous region as on the board.
#
# The partition is mounted at /rom when it holds a ROMFS image (an erased one does not). The caller keeps
# what `mount` returns (the partition's bytes first, then the ballast) for the whole process, puts "/rom"
# and "/rom/lib" on sys.path after ".frozen" as the board's start-up does, and may drop this module.
import gc
import vfs

ROMFS_HEADER = b"\xd2\xcd\x31"


def mount(partition_path, app_heap):
    held = []
    gc.collect()
    before = gc.mem_alloc()
    with open(partition_path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        partition = bytearray(size)
        f.readinto(partition)
    held.append(partition)
    if partition[:3] == ROMFS_HEADER:
        vfs.mount(vfs.VfsRom(partition), "/rom")
    gc.collect()
    spare = gc.mem_free() + gc.mem_alloc() - (gc.mem_alloc() - before) - app_heap
    if spare < 0:
        raise MemoryError("ROM partition: the VM's heap is %d bytes short" % -spare)
    if spare > 64:
        # A bytearray is a 32-byte object plus its data in 32-byte blocks (64-bit unix port): rounded up,
        # so the program is left at most app_heap, never a block more.
        held.append(bytearray((spare - 32 + 31) & ~31))
    gc.collect()
    left = gc.mem_free() + gc.mem_alloc() - (gc.mem_alloc() - before)
    if not app_heap - 64 <= left <= app_heap:
        raise MemoryError("ROM partition: the program would have %d bytes of heap, not %d" % (left, app_heap))
    return held
