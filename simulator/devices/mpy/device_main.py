# The first code a faithful device's MicroPython process runs (unix port; MicroPython code, not firmware):
#   cd FLASH_DIR && micropython -X heapsize=N device_main.py
# The process's working directory is the device's flash: the firmware's paths are relative to it, as a
# board's are to its flash root, so no VFS wrapper is needed (and none costs heap). It runs boot.py and
# main.py from there in one globals dict, as the board's start-up does. Everything after that is the
# firmware on the `sim` board; the process ends by its exit code (kerbline/board/sim.py: 64 deep sleep,
# 65 reset). The host's other folders stay reachable through absolute paths: a model of a board, not
# a sandbox.
import sys

sys.path[:] = ["", ".frozen", "lib"]
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
