"""Ultrasonic fill level: median and outliers, speed of sound, timeouts, range, stuck sensor, JSN serial.

Runs under the 64 KB MicroPython VM with the compiled firmware (and under CPython) on the scripted board;
every case asserts what the feature promises (expected numbers worked out in the comments: speed of
sound 331.3 + 0.606 T m/s, distance = echo * c / 2). Prints "ok NAME" / "FAIL NAME: why".
Usage: sonar_cases.py DIR (a scratch folder for the file cases)
"""
import sys

from fwkit import config as raw_config
from fwkit import cfg_for, run_cases
from scripted_board import Board

from kerbline import config


def sonar(board, **settings):
    from kerbline.sensors.ultrasonic import Sonar

    return Sonar(board, cfg_for("bin", **settings))


def case_sonar_median_drops_a_spike():
    b = Board({})
    b.echo = [5830, 5835, 2000, 5828, 5832]  # 2000 us is a reflection 34 cm away: an outlier
    s = sonar(b)
    # inliers 5828 5830 5832 5835, median 5832 us at 20 degC: 5832 * 343.42 / 2 = 1001.4 mm
    assert s.sample(320) == (1001, 10), s.fault  # fill = 100 - (1001 - 100) / 1000 = 9.9 -> 10
    assert b.pings == 5


def case_sonar_speed_of_sound_follows_temperature():
    from kerbline.sensors.ultrasonic import echo_to_mm

    assert echo_to_mm(5830, 0) == 965  # 331.30 m/s: 965.7 mm
    assert echo_to_mm(5830, 640) == 1036  # 40 degC, 355.54 m/s: 1036.4 mm
    assert echo_to_mm(5830, -160) == 948  # -10 degC, 325.24 m/s: 948.1 mm
    assert echo_to_mm(38000, 1280) < 2 ** 30  # the products stay small ints on a 32-bit board


def case_sonar_timeouts_are_a_fault():
    b = Board({})
    b.echo = [None, None, None, 5830, 5830]
    s = sonar(b)
    assert s.sample(320) is None and s.fault == "sonar: no echo"


def case_sonar_scattered_echoes_are_a_fault():
    b = Board({})
    b.echo = [3000, 5000, 7000, 9000, 11000]
    s = sonar(b)
    assert s.sample(320) is None and s.fault == "sonar: noisy"


def case_sonar_out_of_range_is_a_fault():
    b = Board({})
    b.echo = [58]  # 10 mm: inside the blind zone (min_mm 20)
    s = sonar(b)
    assert s.sample(320) is None and s.fault == "sonar: out of range"
    b.echo = [9320]  # 1600 mm: past max_mm 1500, inside the timeout margin
    s = sonar(b, max_mm=1500)
    assert s.sample(320) is None and s.fault == "sonar: out of range"
    b.echo = [11650]  # 2000 mm: beyond the timeout the sonar waits for max_mm, so no echo at all
    assert s.sample(320) is None and s.fault == "sonar: no echo"


def case_sonar_stuck_reading_is_a_fault():
    b = Board({})
    s = sonar(b, stuck_n=3)
    b.echo = [5830]  # every ping of every sample exactly the same: a wet transducer
    assert s.sample(320) is not None
    assert s.sample(320) is not None
    assert s.sample(320) is None and s.fault == "sonar: stuck"
    s.same = 0
    for i in range(6):  # a real echo jitters: never stuck
        b.echo = [5830 + i, 5831, 5829 + i, 5830, 5832]
        assert s.sample(320) is not None, s.fault


def case_fill_is_clamped():
    from kerbline.sensors.ultrasonic import fill_percent

    assert fill_percent(50, 100, 1000) == 100  # above the full level: overfull, still 100
    assert fill_percent(1100, 100, 1000) == 0
    assert fill_percent(1300, 100, 1000) == 0
    assert fill_percent(600, 100, 1000) == 50


def case_jsn_serial_mode():
    b = Board({})
    pins = {"jsn_tx": 17, "jsn_rx": 16, "temp": 4}
    from kerbline.sensors.ultrasonic import Sonar

    s = Sonar(b, config.check(raw_config("bin", pins=pins)))
    frame = bytes((0xFF, 0x03, 0xE9, (0xFF + 0x03 + 0xE9) & 0xFF))  # 1001 mm
    b.uart_rx[2].extend([b"\x12\x34" + frame, frame, frame[:3] + b"\x00", frame, frame])  # one bad checksum
    assert s.sample() == (1001, 10), s.fault
    assert bytes(b.ports[2].tx) == b"\x55" * 5  # one trigger per ping
    b.uart_rx[2].extend([frame[:3] + b"\x00"] * 5)  # wrong checksums: no reading
    assert s.sample() is None and s.fault == "sonar: no echo"


CASES = (
    case_sonar_median_drops_a_spike,
    case_sonar_speed_of_sound_follows_temperature,
    case_sonar_timeouts_are_a_fault,
    case_sonar_scattered_echoes_are_a_fault,
    case_sonar_out_of_range_is_a_fault,
    case_sonar_stuck_reading_is_a_fault,
    case_fill_is_clamped,
    case_jsn_serial_mode,
)


def main(folder):
    run_cases(CASES, folder)


if __name__ == "__main__":
    main(sys.argv[1])
