# A board's ROMFS partition for the unix-port VM (MicroPython code for the unix port, not firmware).
#
# On a board built with MICROPY_VFS_ROM the partition is memory-mapped flash, mounted at /rom before
# boot.py runs, and .mpy files imported from it execute in place: their bytecode and constant strings stay
# in flash and only the function objects, module dicts and qstrs take heap. The unix port has
# `vfs.VfsRom` but no flash to map, so the image has to sit in the VM's own heap. `mount()` makes that
# honest: the host starts the VM with a heap larger than the board's by the image's size
# (simulator/devices/rom.py), the image is read first, at the bottom of the heap, and a ballast then
# takes whatever is left over, so the program runs in exactly the usable heap a VM of the board's size
# has (`app_heap`, measured on the host), in one contiguous region as on the board.
#
# The caller keeps what `mount` returns (the image and the ballast) for the whole process, puts "/rom"
# and "/rom/lib" on sys.path after ".frozen" as the board's start-up does, and may drop this module.
import gc
import vfs


def mount(image_path, app_heap):
    held = []
    gc.collect()
    before = gc.mem_alloc()
    with open(image_path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        image = bytearray(size)
        f.readinto(image)
    vfs.mount(vfs.VfsRom(image), "/rom")
    held.append(image)
    gc.collect()
    spare = gc.mem_free() + gc.mem_alloc() - (gc.mem_alloc() - before) - app_heap
    if spare < 0:
        raise MemoryError("ROM image: the VM's heap is %d bytes short" % -spare)
    if spare > 64:
        # A bytearray is a 32-byte object plus its data in 32-byte blocks (64-bit unix port).
        held.append(bytearray((spare - 32) & ~31))
    gc.collect()
    left = gc.mem_free() + gc.mem_alloc() - (gc.mem_alloc() - before)
    if not app_heap - 64 <= left <= app_heap:
        raise MemoryError("ROM image: the program would have %d bytes of heap, not %d" % (left, app_heap))
    return held
