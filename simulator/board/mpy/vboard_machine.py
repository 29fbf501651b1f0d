# `machine` on the virtual board: the unix port's built-in machine module plus what an ESP32 has and the
# unix port lacks (reset, reset_cause and its constants). MicroPython code (unix port), not firmware.
# vboard_driver.py imports it before the flash directory is mounted and installs it as sys.modules
# ["machine"], so `import machine` in code on the board finds it; it is never copied into the flash.
import time
from machine import *  # noqa: F401,F403  (idle, soft_reset, Signal, mem8/16/32, time_pulse_us)

# ESP32 values of machine.reset_cause().
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_ctl = None
_cause = PWRON_RESET


def _attach(ctl, cause):
    global _ctl, _cause
    _ctl = ctl
    _cause = cause


def reset():
    # Ask the board to restart this process (boot.py, then main.py); it kills us, so wait for that.
    _ctl.write(b"R\x00\x00\x00\x00\x00")
    while True:
        time.sleep(1)


def reset_cause():
    return _cause
