"""`kerbline device selftest`: the firmware's self-test run on the flashed virtual board, sensors from the bench."""
from __future__ import annotations

import re

from gateway.tools.selftest import parse
from tests.tools.conftest import Bench


def table(out: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^(\S+) +(PASS|FAIL) +(.*)$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


async def test_a_healthy_bin_passes_every_check(bench: Bench) -> None:
    await bench.add("bin-0042")
    bench.hardware["bin-0042"].dist_mm = 600.0
    assert (await bench.flash("bin-0042")).status == 0

    run = await bench.cli("selftest", "bin-0042", "--port", bench.board.port)

    assert run.status == 0, run.text
    rows = table(run.out)
    assert list(rows) == ["config", "heap", "temp", "sonar", "batt", "tilt", "lid", "link"]
    assert {name: status for name, (status, _) in rows.items()} == dict.fromkeys(rows, "PASS")
    assert rows["config"][1] == "bin-0042 (bin)" and rows["temp"][1] == "20.00 C"
    assert re.fullmatch(r"(599|600|601) mm, fill \d+ %", rows["sonar"][1])
    assert rows["batt"][1].startswith("3800 mV") and rows["tilt"][1] == "upright" and rows["lid"][1] == "closed"
    assert rows["link"][1] == "UART 1 open at 115200 baud (TX GPIO 17, RX GPIO 16)"
    assert run.out.rstrip().endswith("8 passed, 0 failed")


async def test_a_failing_sensor_fails_its_check_and_the_command(bench: Bench) -> None:
    await bench.add("bin-0042")
    assert (await bench.flash("bin-0042")).status == 0
    bench.hardware["bin-0042"].no_echo = True
    bench.hardware["bin-0042"].switches["tilt"] = True

    run = await bench.cli("selftest", "bin-0042", "--port", bench.board.port)

    assert run.status == 1
    rows = table(run.out)
    assert rows["sonar"] == ("FAIL", "sonar: no echo") and rows["tilt"] == ("FAIL", "tilted")
    assert rows["batt"][0] == "PASS" and rows["link"][0] == "PASS"
    assert "selftest bin-0042 failed: 2 of 8 checks failed: sonar, tilt" in run.err


async def test_a_light_with_a_dead_bh1750(bench: Bench) -> None:
    # no LDR wired: the bench's light model would fail it along with the BH1750
    await bench.add("lamp-0117", kind="light", pins={"scl": 22, "sda": 21, "relay": 25, "pwm": 33, "volt": 36,
                                                      "curr": 39})
    bench.hardware["lamp-0117"].bus_error = True
    assert (await bench.flash("lamp-0117", "--no-wait")).status == 0

    run = await bench.cli("selftest", "lamp-0117", "--port", bench.board.port)

    rows = table(run.out)
    assert "bh1750" in rows, run.text
    assert rows["bh1750"] == ("FAIL", "no answer on I2C (SDA GPIO 21, SCL GPIO 22)")
    assert rows["volt"][1].startswith("230 V") and rows["curr"][0] == "PASS" and rows["link"][0] == "PASS"
    assert "ldr" not in rows
    assert run.status == 1 and "1 of 6 checks failed: bh1750" in run.err


async def test_the_wrong_board(bench: Bench) -> None:
    await bench.add("bin-0001")
    await bench.add("bin-0002")
    assert (await bench.flash("bin-0001")).status == 0
    run = await bench.cli("selftest", "bin-0002", "--port", bench.board.port)
    assert run.status == 1
    assert f"the board on {bench.board.port} is bin-0001, not bin-0002" in run.err


async def test_a_board_without_firmware_or_config(bench: Bench) -> None:
    await bench.add("bin-0042")
    run = await bench.cli("selftest", "bin-0042", "--port", bench.board.port)
    assert run.status == 1
    assert f"the board on {bench.board.port} holds no Kerbline firmware" in run.err
    assert "flash it first: kerbline device flash bin-0042" in run.err
    assert (await bench.flash("bin-0042")).status == 0
    (bench.flash_dir / "config.json").unlink()
    run = await bench.cli("selftest", "bin-0042", "--port", bench.board.port)
    assert run.status == 1
    assert table(run.out)["config"] == ("FAIL", "/config.json is missing: provision the device (see docs/firmware.md)")


def test_parse_needs_the_end_line() -> None:
    assert parse("SELFTEST config PASS x (bin)\r\nnoise\r\nSELFTEST END 0\r\n")[1] == 0
    assert parse("SELFTEST config PASS x (bin)\r\nMemoryError: memory allocation failed\r\n")[1] is None
