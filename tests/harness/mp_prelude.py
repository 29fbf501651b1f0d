# Runs first inside every MicroPython VM the harness starts (tests/harness/micropython.py), then runs the
# test's script. It is MicroPython code for the unix port, not firmware.
#
# argv: prelude.py SCRIPT NAME VFS_ROOT FIRMWARE ROM APP_HEAP [ARGS...]
#   SCRIPT: host path of the program; NAME: its name in tracebacks and sys.argv[0].
#   VFS_ROOT "": keep the host filesystem; else mount that directory at "/" like a board's flash.
#   FIRMWARE "": no firmware on sys.path; else the host folder holding the `kerbline` package.
#   ROM "": no ROM partition; else "IMAGE,VM_SIDE": the ROMFS image mounted at /rom first of all, by
#   VM_SIDE (simulator/devices/mpy/rom_partition.py), leaving the program APP_HEAP bytes of usable heap.
# The VFS wrapper is in mp_rooted_vfs.py (imported from this folder, the first sys.path entry).
# (The unix port aborts on command-line arguments of 256 bytes or more, so the program travels as a file.)
import sys
import gc


def _mount_rom(rom, app_heap):
    image, vm_side = rom.split(",")
    sys.path.insert(0, vm_side.rsplit("/", 1)[0])
    from rom_partition import mount

    del sys.modules["rom_partition"]
    sys.path.pop(0)
    return mount(image, int(app_heap))


def _main():
    script, name, root, firmware, rom, app_heap = sys.argv[1:7]
    args = sys.argv[7:]
    rom_held = _mount_rom(rom, app_heap) if rom else None
    with open(script) as f:
        source = f.read()
    script_dir = script.rsplit("/", 1)[0] if "/" in script else ""
    if root:
        # Only now, so runs without a VFS root do not pay for the wrapper's bytecode on the heap.
        import os
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
        path = [script_dir, ".frozen"]
        if rom:
            path += ["/rom", "/rom/lib"]
        if firmware:
            path.append(firmware)
    sys.path[:] = path
    sys.argv[:] = [name] + args
    code = compile(source, name, "exec")
    return code, rom_held


_code, _rom_held = _main()
del _main
gc.collect()
exec(_code, {"__name__": "__main__"})
