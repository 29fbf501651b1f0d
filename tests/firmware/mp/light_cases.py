"""Ambient light and lamp: BH1750 automatic range, I2C retries and LDR fallback, lamp control, metering.

Runs under the 64 KB MicroPython VM with the compiled firmware (and under CPython) on the scripted board;
every case asserts what the feature promises (expected numbers worked out in the comments: BH1750 lux =
counts / 1.2 at the default measurement time). Prints "ok NAME" / "FAIL NAME: why".
Usage: light_cases.py DIR (a scratch folder for the file cases)
"""
import sys

from fwkit import cfg_for, run_cases
from scripted_board import Board


def bh1750(board, **settings):
    from kerbline.sensors.light import LightSensor

    return LightSensor(board, cfg_for("light", **settings))


def case_bh1750_reading_and_commands():
    b = Board({})
    b.i2c = [b"\x04\xb0"]  # 1200 counts at MTreg 69: 1200 / 1.2 = 1000 lx
    light = bh1750(b)
    assert light.lux() == 1000 and light.fault is None
    assert b.i2c_writes == [(0x23, b"\x01"), (0x23, b"\x42"), (0x23, b"\x65"), (0x23, b"\x20")]


def case_bh1750_steps_down_in_sunlight():
    b = Board({})
    b.i2c = [b"\xff\xff", b"\x75\x30"]  # saturated at MTreg 69, then 30000 counts at MTreg 31
    light = bh1750(b)
    assert light.lux() == 55645  # 30000 / 1.2 * 69 / 31
    assert (0x23, b"\x40") in b.i2c_writes and (0x23, b"\x7f") in b.i2c_writes  # MTreg 31 = 0b00011111
    assert light.bh.step == 0


def case_bh1750_steps_up_at_dusk():
    b = Board({})
    b.i2c = [b"\x00\x64", b"\x01\x72"]  # 100 counts at 69 (83 lx, coarse), then 370 at MTreg 254
    light = bh1750(b)
    assert light.lux() == 84  # 370 / 1.2 * 69 / 254 = 83.8
    assert (0x23, b"\x47") in b.i2c_writes and (0x23, b"\x7e") in b.i2c_writes  # 254 = 0b111_11110
    assert light.bh.step == 2


def case_i2c_errors_are_retried():
    b = Board({})
    b.i2c = [b"\x04\xb0"]
    b.i2c_fail = 2  # two NACKs, then the bus answers
    light = bh1750(b)
    assert light.lux() == 1000 and light.fault is None and light.bh.errors == 2


def case_i2c_failure_falls_back_to_the_ldr():
    b = Board({})
    b.i2c_fail = 100
    b.adc[35] = 1300
    light = bh1750(b)
    assert light.lux() == 20  # the LDR table's (1300 mV, 20 lx) point
    assert light.fault == "bh1750: no answer on I2C" and light.bh.errors == 3


def case_no_light_sensor_at_all_is_a_fault():
    b = Board({})
    b.i2c_fail = 100
    light = bh1750(b, pins={"scl": 22, "sda": 21, "relay": 25})
    assert light.lux() is None and light.fault == "bh1750: no answer on I2C"


def case_ldr_interpolation():
    from kerbline.sensors.light import ldr_lux

    table = cfg_for("light")["ldr_table"]
    assert ldr_lux(1650, table) == 50  # halfway between (1300, 20) and (2000, 80)
    assert ldr_lux(0, table) == 0 and ldr_lux(3300, table) == 10000


def case_lamp_hysteresis_and_debounce():
    from kerbline.sensors.lamp import LampControl

    c = LampControl(cfg_for("light", lux_on=20, lux_off=50, switch_n=2))
    levels = [c.level(lux, None) for lux in (10, 30, 60, 60, 40, 10, 30, 10, 10)]
    # on at once (10 < 35), 30 in the band, 60 once is not enough, twice is; 10 once, then twice
    assert levels == [100, 100, 100, 0, 0, 0, 0, 0, 100], levels


def case_lamp_night_window():
    from kerbline.sensors.lamp import LampControl

    c = LampControl(cfg_for("light", night_start=1380, night_end=300, night_dim=40, dim=90))
    assert c.level(5, 1400) == 40  # 23:20, inside a window that wraps midnight
    assert c.level(5, 120) == 40
    assert c.level(5, 300) == 90  # the window's end is not in it
    assert c.level(5, None) == 90  # no clock: no night window


def case_lamp_without_light_sensor_follows_the_clock():
    from kerbline.sensors.lamp import LampControl

    c = LampControl(cfg_for("light", dark_start=1080, dark_end=420))
    assert c.level(None, None) == 100  # no sensor, no clock: lit (fail safe)
    assert c.level(None, 720) == 0  # noon
    assert c.level(None, 1200) == 100


def case_power_meter_and_energy():
    from kerbline.sensors.lamp import PowerMeter

    b = Board({})
    b.adc[32] = 1150  # 1150 mV * 200 / 1000 = 230 V
    b.adc[33] = 37  # 37 mV * 5405 / 1000 = 199 mA
    m = PowerMeter(b, cfg_for("light"))
    for _ in range(720):  # one hour in 5 s steps at 45.77 W
        volt, curr, power = m.read(5000)
    assert (volt, curr, power) == (230, 199, 46)
    assert m.wh == 45  # 45.77 Wh, whole Wh only


def case_lamp_fail_rules():
    from kerbline.sensors.lamp import PowerMeter

    m = PowerMeter(Board({}), cfg_for("light", lamp_min_ma=50))
    assert m.failed(100, 0, True)  # on, no current
    assert not m.failed(100, 0, False)  # just switched: the driver is still starting
    assert m.failed(0, 200, True)  # off but drawing: a welded relay
    assert not m.failed(0, 0, True) and not m.failed(60, 120, True)


CASES = (
    case_bh1750_reading_and_commands,
    case_bh1750_steps_down_in_sunlight,
    case_bh1750_steps_up_at_dusk,
    case_i2c_errors_are_retried,
    case_i2c_failure_falls_back_to_the_ldr,
    case_no_light_sensor_at_all_is_a_fault,
    case_ldr_interpolation,
    case_lamp_hysteresis_and_debounce,
    case_lamp_night_window,
    case_lamp_without_light_sensor_follows_the_clock,
    case_power_meter_and_energy,
    case_lamp_fail_rules,
)


def main(folder):
    run_cases(CASES, folder)


if __name__ == "__main__":
    main(sys.argv[1])
