"""`kerbline device broker-config`: the files it writes, loaded by a real mosquitto that enforces them."""
from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.registry import read_registry
from gateway.tools.broker_config import hash_matches
from gateway.tools.provision import mqtt_password
from gateway.wire import down_topic, up_topic
from tests.harness.mosquitto import Mosquitto

GATEWAY_PASSWORD = "correct horse battery staple"


def kerbline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.tools.cli", "device", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A registry with two MQTT devices and one serial device; the broker files made from it."""
    registry = tmp_path / "registry.toml"
    for name, link in (("bin-0001", "mqtt"), ("bin-0002", "mqtt"), ("bin-0003", "serial")):
        extra = ["--broker", "127.0.0.1"] if link == "mqtt" else []
        assert kerbline("add", name, "--kind", "bin", "--link", link, *extra, "--registry", str(registry)).returncode == 0
    (tmp_path / "gw.secret").write_text(GATEWAY_PASSWORD + "\n")
    run = kerbline("broker-config", "--registry", str(registry), "--out-dir", str(tmp_path / "broker"),
                   "--gateway-user", "kerbline-gateway", "--gateway-password-file", str(tmp_path / "gw.secret"))
    assert run.returncode == 0, run.stderr
    assert "(2 devices)" in run.stdout and GATEWAY_PASSWORD not in run.stdout
    return registry, tmp_path / "broker" / "kerbline.passwd", tmp_path / "broker" / "kerbline.acl"


class Client:
    """A paho client that records what the broker answered."""

    def __init__(self, broker: Mosquitto, user: str, password: str,
                 protocol: MQTTProtocolVersion = mqtt.MQTTv5) -> None:
        self.connected = threading.Event()
        self.connack: ReasonCode | None = None
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: list[ReasonCode] = []
        self.acked = threading.Condition()
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=protocol)
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.connected.wait(10)

    def _on_connect(self, c: object, u: object, flags: object, reason: ReasonCode, props: object) -> None:
        self.connack = reason
        self.connected.set()

    def _on_message(self, c: object, u: object, message: mqtt.MQTTMessage) -> None:
        with self.acked:
            self.messages.append((message.topic, bytes(message.payload)))
            self.acked.notify_all()

    def wait_messages(self, n: int) -> list[tuple[str, bytes]]:
        with self.acked:
            assert self.acked.wait_for(lambda: len(self.messages) >= n, 10), self.messages
            return list(self.messages)

    def _on_publish(self, c: object, u: object, mid: int, reason: ReasonCode, props: object) -> None:
        with self.acked:
            self.pubacks[mid] = reason
            self.acked.notify_all()

    def _on_subscribe(self, c: object, u: object, mid: int, reasons: list[ReasonCode], props: object) -> None:
        with self.acked:
            self.subacks.extend(reasons)
            self.acked.notify_all()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        mid = self.client.publish(topic, payload, qos=1).mid
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.pubacks, 10)
            return self.pubacks[mid]

    def subscribe(self, topic: str) -> ReasonCode:
        with self.acked:
            before = len(self.subacks)
            self.client.subscribe(topic, qos=1)
            assert self.acked.wait_for(lambda: len(self.subacks) > before, 10)
            return self.subacks[-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_acl_keeps_each_device_to_its_own_topics(files: tuple[Path, Path, Path],
                                                      mosquitto_factory: Callable[..., Mosquitto]) -> None:
    registry, password_file, acl_file = files
    broker = mosquitto_factory(allow_anonymous=False,
                               extra_config=[f"password_file {password_file}", f"acl_file {acl_file}"])
    devices = read_registry(registry)
    gateway = Client(broker, "kerbline-gateway", GATEWAY_PASSWORD)
    one = Client(broker, "bin-0001", mqtt_password(devices["bin-0001"].key.bytes))
    try:
        assert gateway.connack is not None and not gateway.connack.is_failure
        assert not gateway.subscribe(f"$share/kerbline/{up_topic('+')}").is_failure
        assert not one.publish(up_topic("bin-0001"), b"own report").is_failure
        refused = one.publish(up_topic("bin-0002"), b"forged report")
        assert refused.is_failure and refused.getName() == "Not authorized"
        # mosquitto 2 grants any SUBSCRIBE and applies `read` when it delivers: another device's commands
        # never reach this one, its own do
        one.subscribe(down_topic("bin-0002"))
        assert not one.subscribe(down_topic("bin-0001")).is_failure
        assert not gateway.publish(down_topic("bin-0002"), b"for bin-0002").is_failure
        assert not gateway.publish(down_topic("bin-0001"), b"for bin-0001").is_failure
        refused = gateway.publish(up_topic("bin-0001"), b"a gateway is no device")
        assert refused.is_failure
        assert one.publish(up_topic("bin-0001"), b"second").getName() == "Success"
        # what each side got (messages on one connection arrive in the order the broker took them)
        assert gateway.wait_messages(2) == [(up_topic("bin-0001"), b"own report"), (up_topic("bin-0001"), b"second")]
        assert one.wait_messages(1) == [(down_topic("bin-0001"), b"for bin-0001")]
    finally:
        gateway.close()
        one.close()


def test_logins(files: tuple[Path, Path, Path], mosquitto_factory: Callable[..., Mosquitto]) -> None:
    registry, password_file, acl_file = files
    broker = mosquitto_factory(allow_anonymous=False,
                               extra_config=[f"password_file {password_file}", f"acl_file {acl_file}"])
    devices = read_registry(registry)
    cases = [("bin-0002", mqtt_password(devices["bin-0002"].key.bytes), False),
             ("bin-0002", mqtt_password(devices["bin-0001"].key.bytes), True),  # another device's password
             ("bin-0003", mqtt_password(devices["bin-0003"].key.bytes), True),  # serial device: no login
             ("kerbline-gateway", "wrong", True)]
    for user, password, refused in cases:
        client = Client(broker, user, password, protocol=mqtt.MQTTv311)  # the firmware speaks 3.1.1
        try:
            assert client.connack is not None and client.connack.is_failure == refused, (user, client.connack)
        finally:
            client.close()


def test_files_hold_no_plain_password_and_a_rerun_changes_nothing(tmp_path: Path,
                                                                  files: tuple[Path, Path, Path]) -> None:
    registry, password_file, acl_file = files
    text = password_file.read_text()
    devices = read_registry(registry)
    assert GATEWAY_PASSWORD not in text and mqtt_password(devices["bin-0001"].key.bytes) not in text
    assert [line.split(":")[0] for line in text.splitlines()] == ["kerbline-gateway", "bin-0001", "bin-0002"]
    assert password_file.stat().st_mode & 0o777 == 0o640 and acl_file.stat().st_mode & 0o777 == 0o640
    before = (password_file.read_bytes(), acl_file.read_bytes())
    run = kerbline("broker-config", "--registry", str(registry), "--out-dir", str(password_file.parent),
                   "--gateway-user", "kerbline-gateway", "--gateway-password-file", str(tmp_path / "gw.secret"))
    assert run.returncode == 0, run.stderr
    assert (password_file.read_bytes(), acl_file.read_bytes()) == before


def test_our_hashes_read_mosquitto_passwds(tmp_path: Path) -> None:
    made = tmp_path / "passwd"
    made.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(made), "someone", "s3cret pass"], check=True, timeout=30)
    stored = made.read_text().strip().split(":", 1)[1]
    assert hash_matches(stored, "s3cret pass") and not hash_matches(stored, "s3cret pas")


def test_no_gateway_login_is_an_error(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    assert kerbline("add", "bin-1", "--kind", "bin", "--registry", str(registry)).returncode == 0
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nregistry = "{registry}"\n')
    run = kerbline("broker-config", "--gateway-config", str(config), "--out-dir", str(tmp_path / "b"))
    assert run.returncode == 1
    assert "the gateway has no broker login" in run.stderr and "[mqtt] username and password" in run.stderr
    assert not (tmp_path / "b").exists()
