"""A board whose hardware is played from a script: the tests' stand-in for an ESP32's pins and buses (it implements
the interface documented in kerbline/board/__init__.py; tests construct it directly).

It is the one mock in the project and sits behind the board layer, so sensors, cycles and the app run
unchanged on it. Time is virtual (`sleep_ms` advances `now`), so a 15-minute cycle costs nothing.

A script channel is a list of values read one per call; its last value repeats once the others are
used. A value that is an exception instance is raised instead of returned (an I2C NACK is
`OSError(5)`). Set channels as attributes: `echo` (us or None), `i2c` (bytes read), `i2c_fail` (how many
next bus operations fail with a NACK), `adc[pin]`, `temp[pin]`, `pins[pin]`, `uart_rx[id]` (a UART sensor's answers, one per write).
Outputs land in `relay` (and in order in `switched`), `pwm`, `i2c_writes` (the last I2C_LOG) and each port's `tx`
(`ports[id]`).
deep_sleep() and reset() raise `Slept` / `Reset`, and sleep_ms raises `TimeUp` once `now` reaches
`until` (all BaseException, like SystemExit, so the app's error handling lets them through).
"""
from kerbline.board import DEEPSLEEP, POWER, SOFT

I2C_LOG = 16


class Slept(BaseException):
    pass


class Reset(BaseException):
    pass


class TimeUp(BaseException):
    """sleep_ms reached `until`: how a test ends a loop that runs forever (the light's)."""


def _next(channel, name):
    if not channel:
        raise AssertionError("script has no value for " + name)
    value = channel.pop(0) if len(channel) > 1 else channel[0]
    if isinstance(value, BaseException):
        raise value
    return value


class _Wdt:
    def __init__(self, board, timeout_ms):
        self.board = board
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1
        self.board.fed_at = self.board.now


class _Port:
    """A sensor on a UART: each write (a trigger) makes its next answer, one `rx` chunk, readable."""

    def __init__(self, rx):
        self.rx = rx
        self.tx = bytearray()
        self.ready = b""

    def read(self, n):
        chunk, self.ready = self.ready[:n], self.ready[n:]
        return chunk or None

    def write(self, buf):
        self.tx.extend(buf)
        if self.rx:
            self.ready += self.rx.pop(0)
        return len(buf)


class Board:
    def __init__(self, config):
        self.config = config
        self.now = 0
        self.until = None  # virtual ms at which sleep_ms raises TimeUp
        self.clock = None  # (unix seconds, now when set)
        self.echo = []
        self.i2c = []
        self.i2c_writes = []
        self.i2c_fail = 0
        self.adc = {}
        self.temp = {}
        self.pins = {}
        self.relay = {}
        self.switched = []  # every set_relay, in order
        self.pwm = {}
        self.uart_rx = {}
        self.ports = {}
        self.rtc = None
        self.cause = POWER
        self.wake = None
        self.slept = None  # (ms, wake_pins) of the last deep_sleep
        self.wdt = None
        self.fed_at = None
        self.pings = 0

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.now += ms
        if self.until is not None and self.now >= self.until:
            raise TimeUp()

    def unix_time(self):
        if self.clock is None:
            return None
        return self.clock[0] + (self.now - self.clock[1]) // 1000

    def set_unix_time(self, t):
        self.clock = (t, self.now)

    def rtc_ms(self):
        return self.now

    def uart(self, uart_id, baud, tx, rx):
        port = _Port(self.uart_rx.setdefault(uart_id, []))
        self.ports[uart_id] = port
        return port

    def network_up(self, timeout_ms):
        return True

    def ultrasonic_echo_us(self, trig, echo, timeout_us):
        self.pings += 1
        value = _next(self.echo, "echo")
        return None if value is None or value > timeout_us else value

    def _bus(self):
        if self.i2c_fail:
            self.i2c_fail -= 1
            raise OSError(19)  # ENODEV: what machine.I2C raises on a NACK

    def i2c_write(self, addr, data):
        self._bus()
        if len(self.i2c_writes) == I2C_LOG:  # bounded: a day of a light's samples must fit its heap
            self.i2c_writes.pop(0)
        self.i2c_writes.append((addr, bytes(data)))

    def i2c_read(self, addr, n):
        self._bus()
        return _next(self.i2c, "i2c")

    def adc_mv(self, pin):
        return self._value(self.adc, pin, "adc")

    def temp_16(self, pin):
        return self._value(self.temp, pin, "temp")

    def pin_value(self, pin):
        return self._value(self.pins, pin, "pin")

    def _value(self, table, pin, name):
        if pin not in table:
            raise AssertionError("script has no %s for pin %s" % (name, pin))
        value = table[pin]
        if isinstance(value, list):
            return _next(value, name)
        if isinstance(value, BaseException):
            raise value
        return value  # None: a sensor that does not answer (a DS18B20 gone)

    def set_relay(self, pin, on):
        self.relay[pin] = bool(on)
        self.switched.append((pin, bool(on)))

    def set_pwm(self, pin, duty):
        self.pwm[pin] = duty

    def watchdog(self, timeout_ms):
        if self.wdt is None:
            self.wdt = _Wdt(self, timeout_ms)
        return self.wdt

    def deep_sleep(self, ms, wake_pins):
        self.slept = (ms, tuple(wake_pins))
        raise Slept()

    def reset(self):
        self.cause = SOFT
        raise Reset()

    def reset_cause(self):
        return self.cause

    def wake_reason(self):
        return self.wake

    def persist_read(self):
        return self.rtc

    def persist_write(self, data):
        self.rtc = bytes(data)

    def heap_free(self):
        import gc

        return gc.mem_free() if hasattr(gc, "mem_free") else 0

    def wake_after_sleep(self, pin_wake=False):
        """Model the wake from the last deep sleep: the clock moved on, RTC memory stayed."""
        self.now += 0 if pin_wake else self.slept[0]
        self.cause = DEEPSLEEP
        self.wake = "pin" if pin_wake else "timer"
        self.slept = None
        self.wdt = None

