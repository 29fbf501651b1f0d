# `micropython` on the virtual board: the built-in module, except kbd_intr(), which tells the board which
# byte interrupts the code (-1: none) instead of changing the unix port's SIGINT handler (that would let
# the next SIGINT kill the process). MicroPython code (unix port), not firmware; installed as
# sys.modules["micropython"] by vboard_driver.py, never copied into the flash.
import struct
from micropython import *  # noqa: F401,F403  (const, mem_info, heap_lock, schedule, opt_level, ...)

_ctl = None


def _attach(ctl):
    global _ctl
    _ctl = ctl


def kbd_intr(char):
    _ctl.write(struct.pack("<BHBH", 0x4B, 0, char & 0xFF, 0))  # b"K", flags = the char, 0xFF = none
