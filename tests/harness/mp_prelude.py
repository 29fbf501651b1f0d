# Runs first inside every MicroPython VM the harness starts (tests/harness/micropython.py), then runs the
# test's program. It is MicroPython code for the unix port, not firmware.
#
# Its parameters come in the environment, not on the command line: the unix port interns every argv
# string as a qstr for good (and aborts on one of 256 bytes or more), which would cost the program heap
# and qstrs a board does not spend. Few names here for the same reason (each is a qstr too).
#   KL_SCRIPT   host path of the program      KL_NAME  its name in tracebacks and sys.argv[0]
#   KL_ARGS     sys.argv[1:], each after a \x1f  KL_ROOT  "" or a directory mounted at "/" like a board's flash
#   KL_FIRMWARE "" or the host folder holding the `kerbline` package
#   KL_ROM      "" or "IMAGE,VM_SIDE,APP_HEAP": the ROMFS image mounted at /rom first of all, by VM_SIDE
#               (simulator/devices/mpy/rom_partition.py), leaving the program APP_HEAP bytes of heap
# The VFS wrapper is in mp_rooted_vfs.py (imported from this folder, the first sys.path entry).
import sys
import gc
import os


def _main():
    rom = os.getenv("KL_ROM")
    if rom:
        rom = rom.split(",")
        sys.path.insert(0, rom[1].rsplit("/", 1)[0])
        from rom_partition import mount

        del sys.modules["rom_partition"]
        sys.path.pop(0)
        rom = mount(rom[0], int(rom[2]))
    root = os.getenv("KL_ROOT")
    firmware = os.getenv("KL_FIRMWARE")
    with open(os.getenv("KL_SCRIPT")) as f:
        code = f.read()
    if root:
        # Only now, so runs without a VFS root do not pay for the wrapper's bytecode on the heap.
        import vfs
        from mp_rooted_vfs import RootedVfs

        del sys.modules["mp_rooted_vfs"]
        vfs.umount("/")
        vfs.mount(RootedVfs(root), "/")
        os.chdir("/")
        path = ["", ".frozen", "/lib"]
        if rom:
            path[2:2] = ["/rom", "/rom/lib"]
        if firmware:
            vfs.mount(RootedVfs(firmware), "/.firmware", readonly=True)
            path.append("/.firmware")
    else:
        path = [os.getenv("KL_SCRIPT").rsplit("/", 1)[0], ".frozen"]
        if rom:
            path += ["/rom", "/rom/lib"]
        if firmware:
            path.append(firmware)
    sys.path[:] = path
    sys.argv[:] = [os.getenv("KL_NAME")] + os.getenv("KL_ARGS").split("\x1f")[1:]
    return compile(code, sys.argv[0], "exec"), rom


_code, _rom = _main()
del _main
gc.collect()
exec(_code, {"__name__": "__main__"})
