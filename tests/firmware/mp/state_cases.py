"""Config checking and the config command, RTC state, boot counter, crash log.

Runs under the 64 KB MicroPython VM with the compiled firmware (and under CPython) on the scripted board;
every case asserts what the feature promises (expected numbers worked out in the comments: speed of
sound 331.3 + 0.606 T m/s, distance = echo * c / 2). Prints "ok NAME" / "FAIL NAME: why".
Usage: state_cases.py DIR (a scratch folder for the file cases)
"""
import sys

from fwkit import config as raw_config
from fwkit import cfg_for, run_cases

from kerbline import config


def expect_error(raw, words):
    try:
        config.check(raw)
    except config.ConfigError as e:
        assert words in str(e), str(e)
        return
    raise AssertionError("accepted: %r" % (raw,))


def case_config_defaults_and_refusals():
    cfg = cfg_for("bin")
    assert cfg["interval"] == 900 and cfg["full_at"] == 80 and "lux_on" not in cfg
    assert cfg["link"] == {"type": "serial", "uart": 1, "baud": 115200, "tx": 17, "rx": 16}
    expect_error(raw_config("bin", intervall=600), "unknown setting 'intervall'")
    expect_error(raw_config("bin", interval=5), "'interval' must be an integer 60..86400")
    expect_error(raw_config("bin", lux_on=5), "'lux_on' is not a bin setting")
    expect_error(raw_config("bin", key="zz" * 32), "64 hex digits")
    expect_error(raw_config("bin", id="Bin 42"), "'id' must be")
    raw = raw_config("bin")
    raw["kind"] = "lamp"
    expect_error(raw, "'kind' must be")
    expect_error(raw_config("bin", link={"type": "lora"}), "'link' must be")
    expect_error(raw_config("bin", pins={"trig": 5}), "a bin needs pins")
    expect_error(raw_config("bin", pins={"trig": 5, "echo": 99}), "'pins.echo' must be an integer 0..48")
    expect_error(raw_config("light", lux_on=60, lux_off=50), "'lux_on' must be below 'lux_off'")


def case_config_command_is_atomic(folder):
    import json

    path = folder + "/config.json"
    with open(path, "w") as f:
        json.dump(raw_config("bin"), f)
    cfg = cfg_for("bin")
    assert config.apply(cfg, {"interval": 600, "full_at": 90}, path) is None
    assert cfg["interval"] == 600 and config.load(path)["full_at"] == 90
    assert "must be an integer" in config.apply(cfg, {"interval": 5, "full_at": 70}, path)
    assert "cannot be set" in config.apply(cfg, {"lux_on": 5}, path)
    assert cfg["full_at"] == 90 and config.load(path)["interval"] == 600  # nothing half applied
    import os

    assert "config.json.tmp" not in os.listdir(folder)


def case_rtc_state_round_trip():
    from kerbline.persist import State

    st = State()
    st.boot, st.seq, st.rtc0, st.alarms, st.sonar_last, st.sonar_same = 7, 41, 10 ** 12, 5, 5830, 3
    back = State()
    assert back.unpack(st.pack())
    assert (back.boot, back.seq, back.rtc0, back.alarms, back.sonar_last, back.sonar_same) == (7, 41, 10 ** 12, 5,
                                                                                              5830, 3)
    bad = bytearray(st.pack())
    bad[6] ^= 1
    assert not State().unpack(bytes(bad)) and not State().unpack(None) and not State().unpack(b"\x00" * 40)


def case_boot_counter(folder):
    from kerbline.persist import next_boot, read_boot

    path = folder + "/boot.cnt"
    assert read_boot(path) == 0
    assert next_boot(path) == 1 and next_boot(path) == 2 and read_boot(path) == 2
    with open(path, "w") as f:
        f.write("garbage")
    try:
        next_boot(path)
    except ValueError as e:
        assert "unreadable" in str(e)
    else:
        raise AssertionError("an unreadable counter restarted")


def case_crash_log_is_bounded(folder):
    from kerbline import crashlog

    log, count = folder + "/crash.log", folder + "/crash.cnt"
    for i in range(60):
        assert crashlog.record("OSError: [Errno 5] EIO number %d" % i, 3, log, count) == i + 1
    import os

    assert os.stat(log)[6] <= crashlog.LOG_MAX
    assert crashlog.last(log).endswith("number 59")
    crashlog.healthy(count)
    assert crashlog.count(count) == 0


CASES = (
    case_config_defaults_and_refusals,
    case_config_command_is_atomic,
    case_rtc_state_round_trip,
    case_boot_counter,
    case_crash_log_is_bounded,
)
FILE_CASES = (case_config_command_is_atomic, case_boot_counter, case_crash_log_is_bounded,)


def main(folder):
    run_cases(CASES, folder, FILE_CASES)


if __name__ == "__main__":
    main(sys.argv[1])
