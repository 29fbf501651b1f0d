"""`kerbline device monitor`, and the MQTT side of flash's first-report wait, on real ptys and a real broker."""
from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.tools.flash import FlashOptions, _wait_first
from gateway.tools.steps import StepError, Steps
from gateway.tools.watch import MqttWatcher
from gateway.wire import encode_frame, state_topic, up_topic
from tests.harness.mosquitto import Mosquitto
from tests.harness.pty_serial import PtySerial
from tests.tools.test_watch import KEY, OTHER_KEY, report

REGISTRY = f'[devices.bin-0042]\nkind = "bin"\nkey = "{KEY.hex()}"\n'


def start_monitor(registry: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "device", "monitor", "bin-0042",
                             "--registry", str(registry), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("monitoring bin-0042"), proc.stderr.read()  # type: ignore[union-attr]
    return proc


def test_monitor_link_and_console(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    with PtySerial() as link, PtySerial() as console:
        proc = start_monitor(registry, "--port", link.path, "--console", console.path, "--count", "3",
                             "--seconds", "30")
        console.write_master(b"MicroPython v1.28 on 2026-01-01; ESP32 module with ESP32\r\n")
        link.write_master(encode_frame(report(1)) + encode_frame(report(1)) + encode_frame(report(2, key=OTHER_KEY))
                          + b"\x13\x37\x00" + encode_frame(report(3, time=1767225600)))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [line.split(" ", 1)[1] for line in out.splitlines()[:-1]]  # without the time stamps
    assert "console | MicroPython v1.28 on 2026-01-01; ESP32 module with ESP32" in lines
    link_lines = [line for line in lines if line.startswith("link")]
    assert link_lines == [
        "link    bin-0042 boot 7 seq 1 at uptime 1.5 s (clock not set): fill level 42 %, distance 812 mm, "
        "temperature 19.5 °C, tilted, ALARM full",
        "link    bin-0042 boot 7 seq 1 at uptime 1.5 s (clock not set): fill level 42 %, distance 812 mm, "
        "temperature 19.5 °C, tilted, ALARM full (again)",
        "link    refused: bad_tag (MAC check failed for bin-0042) - the device's key differs from the registry's: flash the device again",
        "link    refused: bad_cobs (not enough input bytes for length code) - line noise or a wrong baud rate",
        "link    bin-0042 boot 7 seq 3 at 2026-01-01 00:00:00Z: fill level 42 %, distance 812 mm, "
        "temperature 19.5 °C, tilted, ALARM full",
    ]
    assert out.splitlines()[-1] == ("3 reports verified (1 of them resends), refused: bad_cobs 1, bad_tag 1, "
                                    "1 console lines")


def test_monitor_a_port_that_is_not_there(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    run = subprocess.run([sys.executable, "-m", "gateway.tools.cli", "device", "monitor", "bin-0042", "--registry",
                          str(registry), "--port", str(tmp_path / "ttyUSB7")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert f"monitor bin-0042 failed: cannot open {tmp_path / 'ttyUSB7'}" in run.stderr


def device_client(broker: Mosquitto, device: str = "bin-0042") -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_monitor_the_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    device = device_client(mosquitto)
    try:
        device.publish(state_topic("bin-0042"), b"online", qos=1, retain=True).wait_for_publish(5)
        proc = start_monitor(registry, "--broker", f"{mosquitto.host}:{mosquitto.port}", "--count", "1",
                             "--seconds", "30")
        device.publish(up_topic("bin-0042"), report(8, device="bin-0043"), qos=1).wait_for_publish(5)
        device.publish(up_topic("bin-0042"), report(9), qos=1).wait_for_publish(5)
        out, err = proc.communicate(timeout=30)
    finally:
        device.loop_stop()
        device.disconnect()
    assert proc.returncode == 0, err
    lines = [line.split(" ", 1)[1] for line in out.splitlines()[:-1]]
    assert lines == ["broker  state online (retained)",
                     "broker  refused: kid_mismatch (kid is not the topic's device) - published on another "
                     "device's topic",
                     "broker  bin-0042 boot 7 seq 9 at uptime 1.5 s (clock not set): fill level 42 %, distance 812 mm, "
                     "temperature 19.5 °C, tilted, ALARM full"]


def wait(opts: FlashOptions, watcher: MqttWatcher) -> tuple[object, str]:
    out = io.StringIO()
    steps = Steps("test", ["first report"], out)
    try:
        with steps.step("first report") as step:
            return _wait_first(opts, watcher, step, boot_before=6), out.getvalue()
    finally:
        watcher.close()


@pytest.fixture
def watch_broker(mosquitto: Mosquitto) -> Callable[[], MqttWatcher]:
    return lambda: MqttWatcher(mosquitto.host, mosquitto.port, "bin-0042", lambda d: KEY if d == "bin-0042" else None)


def test_flash_waits_for_a_live_online_not_a_retained_one(tmp_path: Path, mosquitto: Mosquitto,
                                                           watch_broker: Callable[[], MqttWatcher]) -> None:
    opts = FlashOptions("bin-0042", str(tmp_path / "no-console"), tmp_path / "r.toml", tmp_path, wait_s=20)
    device = device_client(mosquitto)
    try:
        device.publish(state_topic("bin-0042"), b"online", qos=1, retain=True).wait_for_publish(5)  # from before
        watcher = watch_broker()
        device.publish(state_topic("bin-0042"), b"online", qos=1, retain=True).wait_for_publish(5)  # after reset
        result, out = wait(opts, watcher)
    finally:
        device.loop_stop()
        device.disconnect()
    assert result == "online"
    assert "state: online (retained, from before)" in out and "bin-0042 is online on the broker" in out


def test_flash_fails_at_once_on_a_report_under_another_key(tmp_path: Path, mosquitto: Mosquitto,
                                                           watch_broker: Callable[[], MqttWatcher]) -> None:
    opts = FlashOptions("bin-0042", str(tmp_path / "no-console"), tmp_path / "r.toml", tmp_path, wait_s=20)
    device = device_client(mosquitto)
    try:
        watcher = watch_broker()
        device.publish(up_topic("bin-0042"), report(1, key=OTHER_KEY), qos=1).wait_for_publish(5)
        with pytest.raises(StepError, match="the device sent a frame the gateway refuses: refused: bad_tag"):
            wait(opts, watcher)
    finally:
        device.loop_stop()
        device.disconnect()
