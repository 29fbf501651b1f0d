"""`kerbline device flash` against the simulator's virtual board, with the real mpremote and mpy-cross.

The board is a pty speaking the MicroPython REPL with the real unix-port VM behind it (the `sim` board
layer reads its sensors from the simulator's sensor server); its link UART is one end of the
simulator's serial cable and the tool watches the other end, as a technician's USB-serial adapter.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable

import serial  # type: ignore[import-untyped]  # pyserial ships no stubs

from gateway.registry import read_registry
from gateway.tools.firmware_build import build
from gateway.tools.flash import STEPS, boot_floor
from gateway.tools.provision import config_bytes, device_config, load_settings
from tests.harness.mosquitto import Mosquitto, free_port
from tests.harness.pty_serial import PtySerial
from tests.tools.conftest import Bench

# What the firmware itself writes on its flash while it runs (kerbline/app.py, persist.py, crashlog.py,
# safemode.py, board/sim.py); anything else on the board must be the tools' own.
DEVICE_FILES = {"boot.cnt", "boot.cnt.tmp", "queue.log", "cid", "cid.tmp", "crash.log", "crash.cnt",
                "safemode.txt", ".rtc", ".clock", ".reset"}


def sha256(path: os.PathLike[str]) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def board_files(bench: Bench) -> dict[str, str]:
    root = bench.flash_dir
    return {p.relative_to(root).as_posix(): sha256(p) for p in root.rglob("*") if p.is_file()}


def expected_files(bench: Bench, device_id: str) -> dict[str, str]:
    """The compiled firmware for a board plus this device's config.json, by sha256."""
    out = bench.root / "expected-build"
    files = {f.board_path: f.sha256 for f in build(out)}
    device = read_registry(bench.registry)[device_id]
    files["config.json"] = hashlib.sha256(config_bytes(device_config(device, load_settings(bench.registry, device)))).hexdigest()
    return files


def steps_ok(run_out: str) -> list[str]:
    return re.findall(r"^\[\d/8\] (.+?) +ok", run_out, re.M)


async def test_full_flash_of_a_bare_board_ends_in_a_verified_first_report(bench: Bench) -> None:
    await bench.add("bin-0042")
    assert not any(bench.flash_dir.iterdir()), "the board starts bare"

    run = await bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert steps_ok(run.out) == STEPS
    # every firmware file and the config, and nothing else but what the running firmware writes itself
    expected = expected_files(bench, "bin-0042")
    on_board = board_files(bench)
    assert {p: on_board.get(p) for p in expected} == expected
    assert set(on_board) - set(expected) <= DEVICE_FILES, set(on_board) - set(expected)
    assert not [p for p in on_board if p.endswith(".py") and p not in ("boot.py", "main.py")]
    assert "kerbline/wire/report_parse.mpy" not in on_board and "kerbline/selftest.mpy" not in on_board
    # the config holds the registry's key (the one the gateway verifies with), and the key is never shown
    config = json.loads((bench.flash_dir / "config.json").read_text())
    key = tomllib.loads(bench.registry.read_text())["devices"]["bin-0042"]["key"]
    assert config["key"] == key and key not in run.text
    # the first report, verified under that key by gateway.wire, came from this very boot
    first = re.search(r"\[8/8\] first report ok  after [\d.]+ s: bin-0042 boot (\d+) seq 1 at uptime .*: "
                      r"fill level \d+ %, distance \d+ mm, temperature 20 °C, battery 3800 mV$", run.out, re.M)
    assert first, run.out
    assert int(first.group(1)) > boot_floor() - 2 and "queued before" not in run.out


async def test_reflash_copies_nothing_unchanged_and_keeps_the_key(bench: Bench) -> None:
    await bench.add("bin-0042")
    assert (await bench.flash("bin-0042")).status == 0
    key_before = tomllib.loads(bench.registry.read_text())["devices"]["bin-0042"]["key"]
    stamps = {p: p.stat().st_mtime_ns for p in bench.flash_dir.rglob("*.mpy")}
    config_stamp = (bench.flash_dir / "config.json").stat().st_mtime_ns

    run = await bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert "0 to write, 0 to remove" in run.out and "[5/8] write        ok  0 files written" in run.out
    assert {p: p.stat().st_mtime_ns for p in bench.flash_dir.rglob("*.mpy")} == stamps
    assert (bench.flash_dir / "config.json").stat().st_mtime_ns == config_stamp
    assert tomllib.loads(bench.registry.read_text())["devices"]["bin-0042"]["key"] == key_before
    assert "[8/8] first report ok" in run.out


async def test_changed_settings_rewrite_only_the_config_and_stale_firmware_goes(bench: Bench) -> None:
    await bench.add("bin-0042")
    assert (await bench.flash("bin-0042")).status == 0
    bench.sim_settings("bin-0042", full_at=70)
    (bench.flash_dir / "kerbline" / "app.py").write_text("raise RuntimeError('stale source shadows app.mpy')\n")
    (bench.flash_dir / "kerbline" / "gone").mkdir()
    (bench.flash_dir / "kerbline" / "gone" / "old.mpy").write_bytes(b"M\x06")

    run = await bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert "1 to write, 2 to remove" in run.out and "[1/1] config.json" in run.out
    assert not (bench.flash_dir / "kerbline" / "app.py").exists()
    assert not (bench.flash_dir / "kerbline" / "gone").exists()
    assert json.loads((bench.flash_dir / "config.json").read_text())["full_at"] == 70
    assert "[8/8] first report ok" in run.out


async def test_rotate_key_updates_board_and_registry_and_drops_reports_sealed_with_the_old_key(bench: Bench) -> None:
    await bench.add("bin-0042")
    assert (await bench.flash("bin-0042")).status == 0
    old_key = tomllib.loads(bench.registry.read_text())["devices"]["bin-0042"]["key"]
    assert (bench.flash_dir / "queue.log").exists()  # the first report, unacked: nobody ran a gateway

    run = await bench.flash("bin-0042", "--rotate-key")

    assert run.status == 0, run.text
    new_key = tomllib.loads(bench.registry.read_text())["devices"]["bin-0042"]["key"]
    assert new_key != old_key and json.loads((bench.flash_dir / "config.json").read_text())["key"] == new_key
    assert "queue.log" in run.out  # removed before the reset
    assert new_key not in run.text and old_key not in run.text
    # the report that verified (under the new key, from the registry) is a new one
    assert re.search(r"first report ok .* seq 1 at", run.out) and "queued before" not in run.out


async def test_a_board_of_another_device_is_refused_unless_replaced(bench: Bench) -> None:
    await bench.add("bin-0001")
    await bench.add("bin-0002")
    assert (await bench.flash("bin-0001")).status == 0
    (bench.flash_dir / "boot.cnt").write_text("99999999\n")

    refused = await bench.flash("bin-0002")
    assert refused.status == 1
    assert "failed at step [4/8] 'read board': this board is bin-0001's" in refused.err
    assert "--replace" in refused.err
    assert json.loads((bench.flash_dir / "config.json").read_text())["id"] == "bin-0001"

    run = await bench.flash("bin-0002", "--replace")
    assert run.status == 0, run.text
    assert json.loads((bench.flash_dir / "config.json").read_text())["id"] == "bin-0002"
    # bin-0001's boot counter is not carried over: bin-0002 numbers from the hour-based floor
    assert re.search(rf"bin-0002 boot ({boot_floor() + 1}|{boot_floor() + 2}) seq 1", run.out), run.out


async def test_no_board(bench: Bench) -> None:
    await bench.add("bin-0042")
    run = await bench.cli("flash", "bin-0042", "--port", str(bench.root / "ttyUSB9"), "--no-wait",
                          "--build-dir", str(bench.build_dir))
    assert run.status == 1
    assert f"failed at step [4/8] 'read board': no board: {bench.root / 'ttyUSB9'} does not exist" in run.err
    assert "what to do: plug the board in" in run.err


async def test_a_port_where_nothing_answers(bench: Bench, pty_serial: PtySerial) -> None:
    await bench.add("bin-0042")
    run = await bench.cli("flash", "bin-0042", "--port", pty_serial.path, "--no-wait", "--board-timeout", "3",
                          "--build-dir", str(bench.build_dir))
    assert run.status == 1
    assert f"failed at step [4/8] 'read board': no answer from the board on {pty_serial.path} within 3 s" in run.err
    assert "install-micropython" in run.err and "hold BOOT while pressing RESET" in run.err


async def test_board_busy(bench: Bench) -> None:
    await bench.add("bin-0042")
    holder = serial.Serial(bench.board.port, exclusive=True)  # e.g. a forgotten `screen` session
    try:
        run = await bench.flash("bin-0042")
    finally:
        holder.close()
    assert run.status == 1
    assert f"failed at step [4/8] 'read board': {bench.board.port} is busy: another program has it open" in run.err
    assert "fuser" in run.err
    assert not any(bench.flash_dir.iterdir()), "nothing was written"


async def test_write_error(bench: Bench) -> None:
    await bench.add("bin-0042")
    # a damaged filesystem: one of the firmware's files is a link into nowhere, so it cannot be written
    (bench.flash_dir / "kerbline").mkdir()
    os.symlink("/nonexistent-kerbline-test/x", bench.flash_dir / "kerbline" / "app.mpy")

    run = await bench.flash("bin-0042")

    assert run.status == 1
    assert "failed at step [5/8] 'write': the board refused while writing files: cp: kerbline/app.mpy: " \
           "No such file or directory" in run.err
    assert "what to do:" in run.err and "reinstall MicroPython" in run.err
    assert not (bench.flash_dir / "config.json").exists(), "the config goes last, after every firmware file"


async def test_no_first_report(bench: Bench, tmp_path: object) -> None:
    # the device's link UART goes to a pty nobody listens on: the adapter is not wired to it
    master, slave = os.openpty()
    try:
        await bench.add("bin-0042", link_pty=os.ttyname(slave))
        run = await bench.flash("bin-0042", wait_s=3)
    finally:
        os.close(master)
        os.close(slave)
    assert run.status == 1
    assert "failed at step [8/8] 'first report': no valid report from bin-0042 within 3 s" in run.err
    assert "check the link wiring" in run.err
    assert steps_ok(run.out) == STEPS[:-1]


async def test_a_config_the_device_would_refuse_stops_before_the_board(bench: Bench) -> None:
    await bench.add("bin-0042", full_at=500)
    run = await bench.flash("bin-0042")
    assert run.status == 1
    assert "failed at step [3/8] 'config': the device would refuse this config: 'full_at' must be an integer " \
           "10..100, got 500" in run.err
    assert not any(bench.flash_dir.iterdir())


async def test_a_serial_device_needs_the_link_port_to_wait(bench: Bench) -> None:
    await bench.add("bin-0042")
    run = await bench.cli("flash", "bin-0042", "--port", bench.board.port, "--build-dir", str(bench.build_dir))
    assert run.status == 1
    assert "failed at step [3/8] 'config': a serial device reports on its link UART" in run.err
    assert "--link-port" in run.err and "--no-wait" in run.err


async def test_an_unregistered_device(bench: Bench) -> None:
    run = await bench.flash("bin-9999")
    assert run.status == 1
    assert "failed at step [1/8] 'registry': bin-9999 is not in the registry" in run.err


async def test_a_board_still_booting_is_stopped_before_mpremote_takes_over(bench: Bench) -> None:
    # mpremote sends one Ctrl-C: landing in a slow boot.py it stops only that, and main.py's loop then
    # runs on; flash repeats Ctrl-C until the prompt shows, so mpremote finds a quiet board
    await bench.add("bin-0042")
    (bench.flash_dir / "boot.py").write_text("import time\ntime.sleep(3)\n")
    (bench.flash_dir / "main.py").write_text("import time\nwhile True:\n    time.sleep(0.1)\n")
    bench.board.power_cycle()

    run = await bench.flash("bin-0042")

    assert run.status == 0, run.text
    assert (bench.flash_dir / "main.py").read_text() != "import time\nwhile True:\n    time.sleep(0.1)\n"


async def test_an_mqtt_device_comes_online_on_a_broker_configured_from_the_registry(
        bench: Bench, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    port = free_port()  # the broker starts below, with the files made from the registry
    await bench.add("lamp-0117", "light", None, "--link", "mqtt", "--broker", f"127.0.0.1:{port}")
    (bench.root / "gw.secret").write_text("gateway secret\n")
    made = await bench.cli("broker-config", "--out-dir", str(bench.root / "acl"), "--gateway-user", "kerbline-gateway",
                           "--gateway-password-file", str(bench.root / "gw.secret"))
    assert made.status == 0, made.text
    mosquitto_factory(port=port, allow_anonymous=False,
                      extra_config=[f"password_file {bench.root / 'acl' / 'kerbline.passwd'}",
                                    f"acl_file {bench.root / 'acl' / 'kerbline.acl'}"])

    run = await bench.cli("flash", "lamp-0117", "--port", bench.board.port, "--build-dir", str(bench.build_dir),
                          "--mqtt-user", "kerbline-gateway", "--mqtt-password-file", str(bench.root / "gw.secret"),
                          "--wait-s", "30")

    assert run.status == 0, run.text
    assert re.search(r"\[8/8\] first report ok  after [\d.]+ s: lamp-0117 is online on the broker$", run.out, re.M)
    config = json.loads((bench.flash_dir / "config.json").read_text())
    assert config["link"]["password"] not in run.text  # the derived broker password is never shown
