"""The few names that differ between MicroPython and CPython, in one place.

`const()` lets mpy-cross fold constants on the board; CPython gets the identity function.
"""
try:
    from micropython import const
except ImportError:  # CPython (simulator fleet, tests)

    def const(value):
        return value
