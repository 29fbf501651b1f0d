"""The simulator's board: one MicroPython unix-port process is one device.

Sensors and actuators are served by the simulator (`simulator/devices/sensor_server.py`) over one TCP
connection (config["sim"] = {"host", "port"}) with a line protocol, one request line and one reply line:

  hello DEVICE_ID            -> ok                       (first line; names the device)
  echo TRIG ECHO TIMEOUT_US  -> US | none                 ultrasonic echo pulse width
  i2cw ADDR HEX              -> ok | nack                 I2C write
  i2cr ADDR N                -> HEX | nack                I2C read
  adc PIN                    -> MV
  temp PIN                   -> SIXTEENTHS | none         DS18B20
  pin PIN                    -> 0 | 1
  relay PIN 0|1, pwm PIN DUTY -> ok
  sleep MS PIN...            -> timer | pin N             deep sleep: the simulator answers at the wake
Anything else is answered `err WHY`, which raises OSError here like a failing bus would.

The link UART is a pty (config["link"]["pty"]; raw mode, VMIN = VTIME = 0, so reads never block). Flash is the process's VFS root; RTC memory is the file
/.rtc (the simulator deletes it to model a power cut), the clock's offset from the host clock is /.clock.

A deep sleep or a reset ends the process; the simulator's device runner starts it again:
  64  the deep sleep is over (the reply to `sleep` came): boot again now
  65  machine.reset(): boot again now
  killed by SIGKILL    the watchdog fired (a thread that was not fed in time kills the process)
  0                    the program ended (safe mode, REPL): do not restart
Before exiting, the cause and wake reason are written to /.reset, which the next boot reads once.
"""

import os
import socket
import sys
import time

from kerbline.board import DEEPSLEEP, POWER, SOFT, WDT
from kerbline.compat import const

# (paths and numbers are written out where they are used: on a 64 KB heap every module-level name costs)
_EXIT_DEEPSLEEP = const(64)
_EXIT_RESET = const(65)
_PERSIST_MAX = const(512)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _Pty:
    """The link UART: a pty in raw mode with VMIN = VTIME = 0, so read() returns what is there, never waits."""

    def __init__(self, path):
        import termios

        try:
            self._f = open(path, "r+b")
        except OSError:  # the VFS root hides host paths: mount the pty's folder next to it
            import vfs

            folder, name = path.rsplit("/", 1)
            try:
                vfs.mount(vfs.VfsPosix(folder), "/.simdev")
            except OSError:
                pass  # already mounted by an earlier port
            self._f = open("/.simdev/" + name, "r+b")
        fd = self._f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][5] = 0  # VTIME
        attrs[6][6] = 0  # VMIN
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def read(self, n):
        return self._f.read(n) or None

    def write(self, buf):
        return self._f.write(buf)  # unbuffered; flush() would fsync, which a tty refuses (EINVAL)


class _Wdt:
    """A thread that kills the process when the main loop stops feeding it, as the ESP32's would reset."""

    def __init__(self, board, timeout_ms):
        import _thread

        self.board = board
        self.timeout_ms = timeout_ms
        self.fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed = time.ticks_ms()

    def _watch(self):
        while time.ticks_diff(time.ticks_ms(), self.fed) < (self.timeout_ms or 0):
            time.sleep_ms(100)
        if self.timeout_ms:  # else the process is ending on purpose (deep sleep, reset)
            print("watchdog: not fed for %d ms, resetting" % self.timeout_ms)
            self.board.leave(WDT, None)
            os.system("kill -9 $PPID")  # the shell's parent is this device's process


class Board:
    def __init__(self, config):
        sim = config.get("sim") or {}
        self._addr = socket.getaddrinfo(sim.get("host", "127.0.0.1"), sim.get("port", 7300))[0][-1]
        self.cfg = config
        self._sock = None
        self._wdt = None
        self.ticks_ms = time.ticks_ms
        self.ticks_diff = time.ticks_diff
        self.sleep_ms = time.sleep_ms
        last = _read(".reset")
        _rm(".reset")
        last = last.decode().split() if last else (POWER, "-")
        self._cause = last[0]
        self._wake = last[1] if last[1] != "-" else None
        if self._cause == POWER:  # a power cut clears RTC memory and the clock
            _rm(".rtc")
            _rm(".clock")

    def ask(self, fmt, *args):
        """One request line to the simulator's sensor server, its reply (bytes); OSError if it fails."""
        try:
            s = self._sock
            if s is None:
                s = socket.socket()
                s.settimeout(10)
                s.connect(self._addr)
                self._sock = s
                s.write("hello %s\n" % self.cfg.get("id"))
                s.readline()
            s.write((fmt % args) + "\n")
            reply = s.readline().strip()
        except OSError:
            self._close()
            raise
        if not reply or reply.startswith(b"err"):
            self._close()
            raise OSError(5)  # EIO: what a failing bus gives on the board
        return reply

    def _close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def unix_time(self):
        offset = _read(".clock")
        return int(time.time()) + int(offset) if offset else None

    def set_unix_time(self, t):
        _write(".clock", b"%d" % (t - int(time.time())))

    def rtc_ms(self):
        return time.time_ns() // 1000000

    def uart(self, uart_id, baud, tx, rx):
        return _Pty(self.cfg["link"]["pty"])

    def network_up(self, timeout_ms):
        return True

    def ultrasonic_echo_us(self, trig, echo, timeout_us):
        reply = self.ask("echo %d %d %d", trig, echo, timeout_us)
        return None if reply == b"none" else int(reply)

    def i2c_write(self, addr, data):
        from binascii import hexlify

        if self.ask("i2cw %d %s", addr, hexlify(data).decode()) != b"ok":
            raise OSError(19)  # ENODEV, what machine.I2C raises on a NACK

    def i2c_read(self, addr, n):
        from binascii import unhexlify

        reply = self.ask("i2cr %d %d", addr, n)
        if reply == b"nack":
            raise OSError(19)
        return unhexlify(reply)

    def adc_mv(self, pin):
        return int(self.ask("adc %d", pin))

    def temp_16(self, pin):
        reply = self.ask("temp %d", pin)
        return None if reply == b"none" else int(reply)

    def pin_value(self, pin):
        return int(self.ask("pin %d", pin))

    def set_relay(self, pin, on):
        self.ask("relay %d %d", pin, 1 if on else 0)

    def set_pwm(self, pin, duty):
        self.ask("pwm %d %d", pin, duty)

    def watchdog(self, timeout_ms):
        if self._wdt is None:
            self._wdt = _Wdt(self, timeout_ms)
        return self._wdt

    def leave(self, cause, wake):
        """Record why this process is about to end, for the next boot's reset_cause()/wake_reason()."""
        if self._wdt is not None and cause != WDT:
            self._wdt.timeout_ms = None  # the watchdog thread must not hold the process open
        _write(".reset", ("%s %s" % (cause, wake or "-")).encode())

    def deep_sleep(self, ms, wake_pins):
        line = "sleep %d" % ms
        for pin in wake_pins:
            line += " %d" % pin
        try:
            reply = self.ask(line)
        except OSError:  # no simulator to wake us: sleep the time out
            time.sleep_ms(ms)
            reply = b""
        self.leave(DEEPSLEEP, "pin" if reply.startswith(b"pin") else "timer")
        sys.exit(_EXIT_DEEPSLEEP)

    def reset(self):
        self.leave(SOFT, None)
        sys.exit(_EXIT_RESET)

    def reset_cause(self):
        return self._cause

    def wake_reason(self):
        return self._wake if self._cause == DEEPSLEEP else None

    def persist_read(self):
        return _read(".rtc")

    def persist_write(self, data):
        if len(data) > _PERSIST_MAX:
            raise ValueError("RTC memory holds 512 bytes")
        _write(".rtc", data)

    def heap_free(self):
        import gc

        return gc.mem_free()
