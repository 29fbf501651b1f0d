# The first code a faithful device's MicroPython process runs (unix port; MicroPython code, not firmware):
#   cd FLASH_DIR && KERBLINE_ROM=IMAGE KERBLINE_APP_HEAP=N micropython -X heapsize=VM_HEAP device_main.py
# (the environment, not argv: the unix port interns argv as qstrs, on the heap, and aborts on an
# argument of 256 bytes or more).
# First of all, as a ROMFS-enabled board's start-up does, the ROM partition: IMAGE (the firmware package's
# .mpy modules, one file every device of a street reads) is read and mounted at /rom by rom_partition.py
# (beside this file: sys.path[0] until it is replaced), which leaves the program exactly N bytes of usable
# heap (simulator/devices/rom.py sizes VM_HEAP). The process's working directory is the device's flash:
# the firmware's paths are relative to it, as a board's are to its flash root, so no VFS wrapper is
# needed (and none costs heap). sys.path is the board's, "/rom" and "/rom/lib" after ".frozen". It runs
# boot.py and main.py from there in one globals dict, as the board's start-up does. Everything after that
# is the firmware on the `sim` board; the process ends by its exit code (kerbline/board/sim.py: 64 deep
# sleep, 65 reset). The host's other folders stay reachable through absolute paths: a model of a board,
# not a sandbox.
import os
import sys


def _mount_rom():
    import rom_partition

    held = rom_partition.mount(os.getenv("KERBLINE_ROM"), int(os.getenv("KERBLINE_APP_HEAP")))
    del sys.modules["rom_partition"]
    return held


_rom = _mount_rom()  # the partition's bytes and the ballast, held for the whole boot
del _mount_rom
sys.path[:] = ["", ".frozen", "/rom", "/rom/lib", "lib"]
sys.argv[:] = []
_g = {"__name__": "__main__"}
for _name in ("boot.py", "main.py"):
    try:
        with open(_name) as _f:
            _code = compile(_f.read(), _name, "exec")
    except OSError:
        continue
    exec(_code, _g)
    _code = None
