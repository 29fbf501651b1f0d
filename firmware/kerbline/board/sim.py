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

The link UART is a pty (config["link"]["pty"], raw mode, polled without blocking) or a TCP socket
(config["link"]["tcp"] = "host:port"). Flash is the process's VFS root; RTC memory is the file
/.rtc (the simulator deletes it to model a power cut), the clock's offset from the host clock is /.clock.

A deep sleep or a reset ends the process; the simulator's device runner starts it again:
  EXIT_DEEPSLEEP (64)  the deep sleep is over (the reply to `sleep` came): boot again now
  EXIT_RESET (65)      machine.reset(): boot again now
  killed by SIGKILL    the watchdog fired (a thread that was not fed in time kills the process)
  0                    the program ended (safe mode, REPL): do not restart
Before exiting, the cause and wake reason are written to /.reset, which the next boot reads once.
"""
import os
import socket
import sys
import time

from kerbline.board import DEEPSLEEP, PERSIST_MAX, PIN, POWER, SOFT, TIMER, WDT

EXIT_DEEPSLEEP = 64
EXIT_RESET = 65
_RTC = "/.rtc"
_CLOCK = "/.clock"
_RESET = "/.reset"
_DEV_MOUNT = "/.simdev"

try:
    from time import ticks_diff, ticks_ms, sleep_ms
except ImportError:  # CPython (fleet mode, tests): monotonic ms, no wrap-around

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _Pty:
    """The link UART: a pty in raw mode; read() never blocks."""

    def __init__(self, path):
        import select
        import termios

        try:
            self._f = open(path, "r+b")
        except OSError:  # the VFS root hides host paths: mount the pty's folder next to it
            import vfs

            folder, name = path.rsplit("/", 1)
            try:
                vfs.mount(vfs.VfsPosix(folder), _DEV_MOUNT)
            except OSError:
                pass  # already mounted by an earlier port
            self._f = open(_DEV_MOUNT + "/" + name, "r+b")
        termios.setraw(self._f.fileno())
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)

    def read(self, n):
        if not self._poll.poll(0):
            return None
        return self._f.read(n) or None

    def write(self, buf):
        n = self._f.write(buf)
        self._f.flush()
        return n


class _Tcp:
    """The link UART as a TCP byte stream (the simulator's alternative to a pty)."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self._s = socket.socket()
        self._s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        self._s.setblocking(False)

    def read(self, n):
        try:
            data = self._s.recv(n)
        except OSError:  # EAGAIN: nothing has arrived
            return None
        if not data:
            raise OSError(104)  # ECONNRESET: the simulator closed the line
        return data

    def write(self, buf):
        self._s.setblocking(True)
        try:
            return self._s.send(buf)
        finally:
            self._s.setblocking(False)


class _Wdt:
    """A thread that kills the process when the main loop stops feeding it, as the ESP32's would reset."""

    def __init__(self, board, timeout_ms):
        import _thread

        self._board = board
        self.timeout_ms = timeout_ms
        self.fed = ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed = ticks_ms()

    def _watch(self):
        while ticks_diff(ticks_ms(), self.fed) < self.timeout_ms:
            sleep_ms(100)
        print("watchdog: not fed for %d ms, resetting" % self.timeout_ms)
        self._board.leave(WDT, None)
        os.system("kill -9 $PPID")  # the shell's parent is this device's process


class Board:
    def __init__(self, config):
        sim = config.get("sim") or {}
        self._address = (sim.get("host", "127.0.0.1"), sim.get("port", 7300))
        self._device = config.get("id", "unnamed")
        self._link = config.get("link") or {}
        self._sock = None
        self._wdt = None
        last = _read_file(_RESET)
        _remove(_RESET)
        parts = last.decode().split() if last else ()
        self._cause = parts[0] if parts else POWER
        self._wake = parts[1] if len(parts) > 1 and parts[1] != "-" else None
        if self._cause == POWER:  # a power cut clears RTC memory and the clock
            _remove(_RTC)
            _remove(_CLOCK)

    # --- the sensor server ---
    def ask(self, line):
        """One request to the simulator's sensor server, one reply line (str); OSError if it fails."""
        if self._sock is None:
            s = socket.socket()
            s.settimeout(10)
            s.connect(socket.getaddrinfo(self._address[0], self._address[1])[0][-1])
            self._sock = s
            self._exchange("hello " + self._device)
        return self._exchange(line)

    def _exchange(self, line):
        try:
            self._sock.send((line + "\n").encode())
            reply = self._sock.readline() if hasattr(self._sock, "readline") else self._readline()
        except OSError:
            self._sock.close()
            self._sock = None
            raise
        if not reply:
            self._sock.close()
            self._sock = None
            raise OSError(104)
        reply = reply.decode().strip()
        if reply.startswith("err"):
            raise OSError(5)  # EIO
        return reply

    def _readline(self):
        out = b""
        while not out.endswith(b"\n"):
            byte = self._sock.recv(1)
            if not byte:
                break
            out += byte
        return out

    # --- time ---
    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    def sleep_ms(self, ms):
        sleep_ms(ms)

    def unix_time(self):
        offset = _read_file(_CLOCK)
        return int(time.time()) + int(offset) if offset else None

    def set_unix_time(self, t):
        _write_file(_CLOCK, str(t - int(time.time())).encode())

    def rtc_ms(self):
        return time.time_ns() // 1000000

    # --- links ---
    def uart(self, uart_id, baud, tx, rx):
        if self._link.get("pty"):
            return _Pty(self._link["pty"])
        return _Tcp(self._link["tcp"])

    def network_up(self, timeout_ms):
        return True

    # --- sensors and outputs ---
    def ultrasonic_echo_us(self, trig, echo, timeout_us):
        reply = self.ask("echo %d %d %d" % (trig, echo, timeout_us))
        return None if reply == "none" else int(reply)

    def i2c_write(self, addr, data):
        from binascii import hexlify

        if self.ask("i2cw %d %s" % (addr, hexlify(data).decode())) != "ok":
            raise OSError(19)  # ENODEV, what machine.I2C raises on a NACK

    def i2c_read(self, addr, n):
        from binascii import unhexlify

        reply = self.ask("i2cr %d %d" % (addr, n))
        if reply == "nack":
            raise OSError(19)
        return unhexlify(reply)

    def adc_mv(self, pin):
        return int(self.ask("adc %d" % pin))

    def temp_16(self, pin):
        reply = self.ask("temp %d" % pin)
        return None if reply == "none" else int(reply)

    def pin_value(self, pin):
        return int(self.ask("pin %d" % pin))

    def set_relay(self, pin, on):
        self.ask("relay %d %d" % (pin, 1 if on else 0))

    def set_pwm(self, pin, duty):
        self.ask("pwm %d %d" % (pin, duty))

    # --- power, resets, memory ---
    def watchdog(self, timeout_ms):
        if self._wdt is None:
            self._wdt = _Wdt(self, timeout_ms)
        return self._wdt

    def leave(self, cause, wake):
        """Record why this process is about to end, for the next boot's reset_cause()/wake_reason()."""
        _write_file(_RESET, ("%s %s" % (cause, wake or "-")).encode())

    def deep_sleep(self, ms, wake_pins):
        line = "sleep %d" % ms
        for pin in wake_pins:
            line += " %d" % pin
        try:
            reply = self.ask(line)
        except OSError:  # no simulator to wake us: sleep the time out
            sleep_ms(ms)
            reply = TIMER
        self.leave(DEEPSLEEP, PIN if reply.startswith(PIN) else TIMER)
        sys.exit(EXIT_DEEPSLEEP)

    def reset(self):
        self.leave(SOFT, None)
        sys.exit(EXIT_RESET)

    def reset_cause(self):
        return self._cause

    def wake_reason(self):
        return self._wake if self._cause == DEEPSLEEP else None

    def persist_read(self):
        return _read_file(_RTC)

    def persist_write(self, data):
        if len(data) > PERSIST_MAX:
            raise ValueError("RTC memory holds %d bytes" % PERSIST_MAX)
        _write_file(_RTC, data)

    def heap_free(self):
        import gc

        return gc.mem_free() if hasattr(gc, "mem_free") else 0
