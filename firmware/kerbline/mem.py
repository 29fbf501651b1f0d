"""Unloading code a phase no longer needs.

On the board, a module's bytecode lives in RAM once imported (the .mpy is loaded onto the heap), and on a
64 KB heap the code is most of what is used. So a run goes in phases, and a phase's modules are imported
inside the functions that need them and dropped after: the config checker once the config is loaded,
the sonar once the bin has sampled. A dropped module is imported again from flash if it is needed again
(a `config` command, a `ping`), which costs milliseconds, not RAM. Only modules nothing else holds a
reference to (imported inside functions, never `from x import y` at module level) are dropped.
"""
import gc
import sys


def drop(*names):
    for name in names:
        if sys.modules.pop(name, None) is None:
            continue
        parent, _, child = name.rpartition(".")
        package = sys.modules.get(parent)
        if package is not None and hasattr(package, child):
            delattr(package, child)
    gc.collect()
