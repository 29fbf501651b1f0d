"""The one board layer: every pin, bus, clock, sleep and reset goes through the object `load()` returns.

No other firmware module imports `machine`, `network`, `esp32`, `onewire` or `ds18x20`; the application,
the sensors and the links take the board object instead, so the same code runs on an ESP32 (`esp32`),
as one simulator process (`sim`) and on the tests' scripted hardware (tests/firmware/mp/scripted_board.py,
which tests construct directly; it is not flashed, where it would only cost .mpy budget).

Every board has these methods (times in ms unless the name says otherwise):
  ticks_ms() / ticks_diff(a, b)   wrapping millisecond tick and the signed difference a - b
  sleep_ms(ms)                    a real wait (light sleep on the ESP32)
  unix_time() -> int | None       seconds since 1970, None while the clock has not been set
  set_unix_time(t)                set the clock (the `time` command); keeps running through deep sleep
  rtc_ms() -> int                 a ms counter that keeps running through deep sleep (uptime across
                                  wakes); only differences mean something
  uart(id, baud, tx, rx) -> port  port.read(n) -> bytes or None (never blocks), port.write(buf)
  network_up(timeout_ms) -> bool  WLAN joined (esp32), always True where the link needs no radio
  ultrasonic_echo_us(trig, echo, timeout_us) -> int | None   one trigger pulse, the echo pulse width
  i2c_write(addr, data) / i2c_read(addr, n) -> bytes          raise OSError on NACK or bus error
  adc_mv(pin) -> int              calibrated millivolts at the pin
  temp_16(pin) -> int | None      DS18B20 on a 1-Wire pin, in 1/16 degC (its native step); None: absent
  pin_value(pin) -> 0 | 1         digital input (pulled as the wiring needs)
  set_relay(pin, on) / set_pwm(pin, duty)   outputs; duty 0..1023
  watchdog(timeout_ms) -> wdt     hardware watchdog, started once; wdt.feed()
  deep_sleep(ms, wake_pins)       never returns: the next wake is a boot with reset_cause() DEEPSLEEP
  reset()                         never returns: a reboot (reset_cause() SOFT)
  reset_cause() -> str            POWER, DEEPSLEEP, WDT, SOFT (constants below)
  wake_reason() -> str | None     "timer" or "pin" after a deep sleep, else None
  persist_read() -> bytes | None / persist_write(data)   RTC memory: survives deep sleep and resets,
                                                          not a power cut (at most 512 bytes)
  heap_free() -> int

`load(config)` picks the board named by config["board"]; without one, `esp32` on an ESP32 and `sim`
elsewhere. `config` is the parsed /config.json (a dict; {} when it is missing, so boot.py and safe mode
can still reach a board).
"""
import sys

# reset causes; wake reasons are the strings "timer" and "pin"
POWER = "power"
DEEPSLEEP = "deepsleep"
WDT = "wdt"
SOFT = "soft"


def load(config):
    """The board object for `config` (see the module docstring for its methods)."""
    name = config.get("board") or ("esp32" if sys.platform == "esp32" else "sim")
    if name == "esp32":
        from kerbline.board.esp32 import Board
    elif name == "sim":
        from kerbline.board.sim import Board
    else:
        raise ValueError("unknown board %r" % name)
    return Board(config)
