"""The firmware's MQTT client (kerbline.links.mqtt) against a real mosquitto, under the real MicroPython VM.

The client runs inside tests/firmware/mp/mqtt_driver.py (the firmware compiled by mpy-cross, 64 KB heap,
as on a board), which the test drives line by line over stdin/stdout. The other side is a CPython paho
client. Faults are real: the broker is frozen with SIGSTOP (it then reads nothing and acknowledges
nothing), killed and restarted, refuses the login or presents a certificate from another CA; the device
is killed with SIGKILL; a TCP relay hands the broker's bytes on a few at a time. The backoff tests run
the same module in-process on CPython with a virtual clock.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from kerbline.links.mqtt import Client
from tests.harness.micropython import MicroPythonProcess
from tests.harness.mosquitto import Mosquitto, free_port

DRIVER = Path(__file__).resolve().parent / "mp" / "mqtt_driver.py"
FIRMWARE_SRC = Path(__file__).resolve().parents[2] / "firmware"
DEV = "bin-0042"
UP = f"kerbline/v1/{DEV}/up"
DOWN = f"kerbline/v1/{DEV}/down"
STATE = f"kerbline/v1/{DEV}/state"
WAIT = 15.0  # seconds a step may take before the test gives up (a guard, not a timing assertion)


# --- the device side: the driver script in a process ---------------------------------------------------

class Driver:
    """The driver script running in a process; `expect` reads its event lines in order."""

    def __init__(self, stdin, stdout, stop: Callable[[], object], describe: Callable[[], str]) -> None:
        self._stdin = stdin
        self._stop = stop
        self._describe = describe
        self.lines: list[str] = []  # every line the driver printed, for assertions on the whole run
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()
        self.expect("READY")

    def _pump(self, stdout) -> None:
        for raw in stdout:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def send(self, command: str) -> None:
        self._stdin.write(command.encode() + b"\n")
        self._stdin.flush()

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The next line matching `pattern` (regex, from the line's start); lines before it are kept."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s\n{self.transcript()}")
            if line is None:
                raise AssertionError(f"driver exited before {pattern!r}\n{self.transcript()}")
            self.lines.append(line)
            match = re.match(pattern, line)
            if match:
                return match

    def ask(self, command: str, pattern: str) -> re.Match[str]:
        self.send(command)
        return self.expect(pattern)

    def stats(self) -> dict[str, int]:
        line = self.ask("stats", "STATS ").string
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}

    def publish(self, text: str) -> int:
        return int(self.ask(f"pub {text}", r"PUB (\d+)|FULL").group(1))

    def wait_for(self, command: str, done: Callable[[str], bool], timeout: float = WAIT) -> str:
        """Send `command` (stats, error, retry) until its answer satisfies `done`; that answer."""
        deadline = time.monotonic() + timeout
        while True:
            self.send(command)
            line = self.expect(command.upper() + " ").string
            if done(line):
                return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{command}: last answer {line!r}\n{self.transcript()}")
            time.sleep(0.02)

    def transcript(self) -> str:
        return "--- driver output ---\n" + "\n".join(self.lines) + "\n" + self._describe()

    def close(self) -> None:
        self._stop()


@pytest.fixture
def device(micropython_process) -> Iterator[Callable[..., Driver]]:
    """Start the driver in a 64 KB MicroPython VM running the compiled firmware: `device(broker, k=v, ...)`."""
    started: list[Driver] = []

    def start(broker: Mosquitto, dev: str = DEV, **options: object) -> Driver:
        args = [broker.host, str(broker.port), dev] + [f"{k}={v}" for k, v in options.items()]
        proc: MicroPythonProcess = micropython_process(DRIVER, heap="64k", args=args)
        driver = Driver(proc.stdin, proc.stdout, proc.close, lambda: "--- stderr ---\n" + proc.stderr_text())
        driver.pid = proc.pid  # type: ignore[attr-defined]
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.close()


# --- the other side: CPython paho clients -------------------------------------------------------------

class Peer:
    """A paho client on its own network thread; received messages queue up in `messages`."""

    def __init__(self, broker: Mosquitto, client_id: str, subscribe: str | None = None) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if subscribe is not None:
            self.client.subscribe(subscribe, qos=1)
            assert self._subscribed.wait(WAIT), "no SUBACK for the test's subscriber"

    def next(self, topic: str, timeout: float = WAIT) -> paho.MQTTMessage:
        """The next message on `topic` (others are skipped)."""
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no message on {topic} within {timeout} s") from None
            if message.topic == topic:
                return message

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()  # first, so the network thread leaves its select() at once
        self.client.loop_stop()


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(broker: Mosquitto, client_id: str = "watcher", subscribe: str | None = None) -> Peer:
        p = Peer(broker, client_id, subscribe)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


class DribbleProxy:
    """A TCP relay between the device and a real broker that hands the broker's bytes on piecemeal.

    Of each block the broker sends, the first `slow` bytes go one at a time with a pause after each,
    the rest in `chunk`-byte pieces: the client's reads end in the middle of fixed headers, remaining
    lengths, topic lengths and packet ids, and large packets arrive over many reads. Bytes from the
    device pass unchanged.
    """

    def __init__(self, broker: Mosquitto, slow: int = 48, chunk: int = 64, pause: float = 0.002) -> None:
        self.host = broker.host
        self.port = free_port()
        self._target = (broker.host, broker.port)
        self._slow = slow
        self._chunk = chunk
        self._pause = pause
        self._listener = socket.create_server((self.host, self.port))
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self._listener.accept()
            except OSError:
                return
            broker = socket.create_connection(self._target)
            device.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [device, broker]
            threading.Thread(target=self._pump, args=(device, broker, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, device, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, dribble: bool) -> None:
        try:
            while data := source.recv(65536):
                if not dribble:
                    sink.sendall(data)
                    continue
                for i in range(min(self._slow, len(data))):
                    sink.sendall(data[i:i + 1])
                    time.sleep(self._pause)
                for i in range(self._slow, len(data), self._chunk):
                    sink.sendall(data[i:i + self._chunk])
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for s in self._sockets:
            s.close()


def wait_for_log(broker: Mosquitto, done: Callable[[str], bool], timeout: float = WAIT) -> str:
    """Wait until the broker's log satisfies `done` (it may write a line after acting); that log."""
    deadline = time.monotonic() + timeout
    while not done(log := broker.log_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"broker log never matched; it ends:\n{log[-3000:]}")
        time.sleep(0.02)
    return log


def freeze(broker: Mosquitto) -> None:
    """SIGSTOP: the broker keeps its sockets open but reads, answers and acknowledges nothing."""
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)


def thaw(broker: Mosquitto) -> None:
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGCONT)


# --- tests ----------------------------------------------------------------------------------------------

def test_qos1_report_reaches_subscriber_and_its_puback_is_reported(mosquitto, device, peer) -> None:
    watcher = peer(mosquitto, subscribe=f"kerbline/v1/{DEV}/#")
    dev = device(mosquitto)
    dev.expect("UP")
    pid = dev.publish("report-1")
    dev.expect(f"ACK {pid}$")
    message = watcher.next(UP)
    assert message.payload == b"report-1" and message.qos == 1
    assert dev.stats()["inflight"] == 0


def test_online_is_retained_on_the_state_topic(mosquitto, device, peer) -> None:
    dev = device(mosquitto)
    dev.expect("UP")
    late = peer(mosquitto, "late", subscribe=STATE)  # subscribes after the device connected
    message = late.next(STATE)
    assert message.payload == b"online" and message.retain


def test_will_says_offline_when_the_device_dies(mosquitto, device, peer) -> None:
    dev = device(mosquitto)
    dev.expect("UP")
    watcher = peer(mosquitto, subscribe=STATE)
    assert watcher.next(STATE).payload == b"online"
    os.kill(dev.pid, signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
    assert watcher.next(STATE).payload == b"offline"
    late = peer(mosquitto, "late", subscribe=STATE)
    message = late.next(STATE)
    assert message.payload == b"offline" and message.retain


def test_close_leaves_offline_retained_and_disconnects(mosquitto, device, peer) -> None:
    dev = device(mosquitto)
    dev.expect("UP")
    dev.ask("close", "CLOSED")
    late = peer(mosquitto, "late", subscribe=STATE)
    assert late.next(STATE).payload == b"offline"
    wait_for_log(mosquitto, lambda log: f"Client {DEV} disconnected." in log)


def test_commands_on_down_reach_the_callback(mosquitto, device, peer) -> None:
    dev = device(mosquitto)
    dev.expect("SUBSCRIBED")
    gateway = peer(mosquitto, "gateway")
    gateway.publish(DOWN, b"cmd-qos1", qos=1)
    dev.expect(f"MSG {DOWN} 8 cmd-qos1$")
    gateway.publish(DOWN, b"cmd-qos0", qos=0)
    dev.expect(f"MSG {DOWN} 8 cmd-qos0$")
    stats = dev.stats()
    assert stats["rx"] == 2 and stats["bad"] == 0


def test_broker_restart_loses_nothing_unacked_is_resent_with_dup(mosquitto_factory, device, peer) -> None:
    broker = mosquitto_factory(extra_config=["log_type debug"])
    dev = device(broker, backoff_ms=200, backoff_max_ms=1000)
    dev.expect("UP")
    freeze(broker)
    pid = dev.publish("must-arrive")  # written to the socket; the frozen broker never reads it
    dev.ask("hold", "HELD")  # no polling while the world changes, so the order below is certain
    broker.kill()
    broker.start()
    watcher = peer(broker, subscribe=UP)
    dev.ask("go", "GOING")
    dev.expect(r"DOWN ")
    dev.expect("UP")
    dev.expect(f"ACK {pid}$")
    assert watcher.next(UP).payload == b"must-arrive"
    stats = dev.stats()
    assert stats["conn"] == 2 and stats["resend"] == 1 and stats["inflight"] == 0
    assert f"Received PUBLISH from {DEV} (d1, q1, r0, m{pid}," in broker.log_text()


def test_late_puback_resend_with_dup_and_one_ack(mosquitto_factory, device, peer) -> None:
    broker = mosquitto_factory(extra_config=["log_type debug"])
    dev = device(broker, ack_ms=300)
    dev.expect("UP")
    watcher = peer(broker, subscribe=UP)
    freeze(broker)
    pid = dev.publish("slow-ack")
    # The frozen broker sends no PUBACK; after ack_ms the client sends the message again with DUP.
    dev.wait_for("stats", lambda line: "resend=0 " not in line)
    thaw(broker)
    dev.expect(f"ACK {pid}$")
    assert watcher.next(UP).payload == b"slow-ack"
    # Both copies are acknowledged by the broker; the second PUBACK finds no message and is counted.
    dev.wait_for("stats", lambda line: "stray=0 " not in line)
    log = broker.log_text()  # complete: the broker logs each PUBLISH before it sends its PUBACK
    assert f"Received PUBLISH from {DEV} (d0, q1, r0, m{pid}," in log
    assert f"Received PUBLISH from {DEV} (d1, q1, r0, m{pid}," in log
    stats = dev.stats()
    assert stats["inflight"] == 0 and stats["conn"] == 1
    assert dev.lines.count(f"ACK {pid}") == 1


def test_window_of_four_then_full_until_acks_free_it(mosquitto, device) -> None:
    dev = device(mosquitto)
    dev.expect("UP")
    freeze(mosquitto)
    pids = [dev.publish(f"r{i}") for i in range(4)]
    assert len(set(pids)) == 4
    dev.ask("pub r4", "FULL$")
    assert dev.stats()["inflight"] == 4
    thaw(mosquitto)
    for pid in pids:
        dev.expect(f"ACK {pid}$")
    assert dev.stats()["inflight"] == 0
    assert dev.publish("r4") not in pids


@pytest.fixture
def dribble_proxy() -> Iterator[Callable[[Mosquitto], DribbleProxy]]:
    proxies: list[DribbleProxy] = []

    def make(broker: Mosquitto) -> DribbleProxy:
        proxies.append(DribbleProxy(broker))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.parametrize("dribble", [False, True], ids=["whole", "dribbled"])
def test_oversized_incoming_is_discarded_and_the_stream_stays_in_step(mosquitto_factory, device, peer,
                                                                      dribble_proxy, dribble) -> None:
    broker = mosquitto_factory(extra_config=["log_type debug"])
    # Dribbled: the broker's bytes reach the device piecemeal, so packets end mid-read everywhere.
    dev = device(dribble_proxy(broker) if dribble else broker, max_packet=1200)
    dev.expect("SUBSCRIBED")
    gateway = peer(broker, "gateway")
    overhead = 2 + len(DOWN) + 2  # topic length, topic, packet id: remaining length = overhead + payload
    gateway.publish(DOWN, b"x" * (1200 - overhead), qos=1)  # exactly at the bound: delivered
    dev.expect(f"MSG {DOWN} {1200 - overhead} x")
    gateway.publish(DOWN, b"y" * (1201 - overhead), qos=1)  # one byte over: discarded
    gateway.publish(DOWN, b"z" * 50_000, qos=1)  # far over: many buffers' worth
    gateway.publish(DOWN, b"w" * 3_000, qos=0)
    gateway.publish(DOWN, b"after", qos=1)
    dev.expect(f"MSG {DOWN} 5 after$")
    stats = dev.stats()
    assert stats["big"] == 3 and stats["bad"] == 0 and stats["conn"] == 1 and stats["rx"] == 2
    assert not [line for line in dev.lines if line.startswith("MSG") and (" y" in line or " z" in line)]
    pid = dev.publish("report-after")
    dev.expect(f"ACK {pid}$")  # the broker has read everything the device sent before this report
    # The discarded QoS 1 messages were still acknowledged, so the broker holds nothing for the device.
    assert len(re.findall(rf"Received PUBACK from {DEV} ", broker.log_text())) == 4


@pytest.fixture
def password_broker(mosquitto_factory, tmp_path: Path) -> Mosquitto:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), DEV, "s3cret-key"], check=True)
    return mosquitto_factory(allow_anonymous=False, extra_config=[f"password_file {passwd}"])


@pytest.mark.parametrize("password", [None, "guess"])
def test_refused_login_is_a_clear_error_and_the_client_backs_off(password_broker, device, password) -> None:
    options = {"backoff_ms": 100, "backoff_max_ms": 400}
    if password:
        options["password"] = password
    dev = device(password_broker, **options)
    error = dev.wait_for("error", lambda line: "refused" in line)
    assert "connection refused: not authorized (5)" in error
    assert "s3cret" not in error and "guess" not in error
    # It keeps trying, waiting at most backoff_max_ms between attempts, and never crashes.
    refused = "disconnected, not authorised"
    refusals = wait_for_log(password_broker, lambda log: refused in log).count(refused)
    wait = int(dev.wait_for("retry", lambda line: line != "RETRY None").split()[1])
    assert 0 <= wait <= 400
    wait_for_log(password_broker, lambda log: log.count(refused) > refusals)
    assert "UP" not in dev.lines
    assert dev.stats()["conn"] == 0


def test_right_password_connects(password_broker, device) -> None:
    dev = device(password_broker, password="s3cret-key")
    dev.expect("UP")
    dev.expect("SUBSCRIBED")
    pid = dev.publish("authenticated")
    dev.expect(f"ACK {pid}$")


def test_missing_pingresp_means_dead_connection_then_reconnect(mosquitto, device) -> None:
    dev = device(mosquitto, keepalive=1, ping_ms=300, backoff_ms=100, backoff_max_ms=200)
    dev.expect("UP")
    freeze(mosquitto)  # the PINGREQ sent after 1 s idle gets no PINGRESP
    dev.expect(r"DOWN MQTTError\('no PINGRESP',?\)")
    thaw(mosquitto)
    dev.expect("UP")
    pid = dev.publish("after-ping-loss")
    dev.expect(f"ACK {pid}$")


def test_report_handed_over_while_down_goes_out_on_connect(mosquitto, device, peer) -> None:
    mosquitto.stop()
    dev = device(mosquitto, backoff_ms=100, backoff_max_ms=200)
    pid = dev.publish("queued-while-down")  # taken into the window although there is no connection
    dev.ask("pub0 lost-qos0", "PUB0 None$")  # QoS 0 is not taken while down
    dev.ask("hold", "HELD")  # the watcher must be subscribed before the device can connect
    mosquitto.start()
    watcher = peer(mosquitto, subscribe=UP)
    dev.ask("go", "GOING")
    dev.expect("UP")
    dev.expect(f"ACK {pid}$")
    assert watcher.next(UP).payload == b"queued-while-down"


def test_idle_poll_allocates_nothing(mosquitto, device) -> None:
    dev = device(mosquitto)
    dev.expect("SUBSCRIBED")
    assert dev.ask("idle 2000", "IDLE ").string == "IDLE bytes=0"


def test_same_client_under_cpython(mosquitto, peer) -> None:
    watcher = peer(mosquitto, subscribe=f"kerbline/v1/{DEV}/#")
    proc = subprocess.Popen([sys.executable, str(DRIVER), mosquitto.host, str(mosquitto.port), DEV],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(FIRMWARE_SRC)})

    def stop() -> None:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()

    dev = Driver(proc.stdin, proc.stdout, stop, lambda: "")
    try:
        dev.expect("UP")
        dev.expect("SUBSCRIBED")
        assert watcher.next(STATE).payload == b"online"
        pid = dev.publish("from-cpython")
        dev.expect(f"ACK {pid}$")
        assert watcher.next(UP).payload == b"from-cpython"
        watcher.publish(DOWN, b"cmd")
        dev.expect(f"MSG {DOWN} 3 cmd$")
        dev.ask("close", "CLOSED")
        assert watcher.next(STATE).payload == b"offline"
    finally:
        dev.close()


# --- TLS -----------------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-in", f"{name}.crt", "-outform", "der", "-out", f"{name}.der", cwd=folder)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a broker certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("tls")
    _make_ca(folder, "ca")
    _make_ca(folder, "other-ca")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=folder)
    return folder


@pytest.fixture
def tls_broker(mosquitto_factory, tls_files: Path) -> Mosquitto:
    """A broker whose only listener speaks TLS (the harness's plain listener line is replaced)."""
    broker = mosquitto_factory(start=False)
    config = broker.config_path.read_text().replace(
        f"listener {broker.port} {broker.host}\n",
        f"listener {broker.port} {broker.host}\ncertfile {tls_files / 'server.crt'}\n"
        f"keyfile {tls_files / 'server.key'}\n")
    broker.config_path.write_text(config)
    broker.start()
    return broker


def test_tls_with_verified_broker(tls_broker, tls_files, device) -> None:
    dev = device(tls_broker, tls=tls_files / "ca.der")
    dev.expect("UP")
    dev.expect("SUBSCRIBED")
    pid = dev.publish("over-tls")
    dev.expect(f"ACK {pid}$")
    assert dev.ask("idle 500", "IDLE ").string == "IDLE bytes=0"


def test_tls_refuses_a_broker_signed_by_another_ca(tls_broker, tls_files, device) -> None:
    dev = device(tls_broker, tls=tls_files / "other-ca.der", backoff_ms=100, backoff_max_ms=200)
    error = dev.wait_for("error", lambda line: line != "ERROR None")
    assert "certificate" in error  # mbedtls: "The certificate is not correctly signed by the trusted CA"
    assert "UP" not in dev.lines
    assert dev.stats()["conn"] == 0


# --- backoff, on CPython with a virtual clock ------------------------------------------------------------

def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    port = free_port()  # nobody listens: every attempt is refused at once
    client = Client(DEV, "127.0.0.1", port, backoff_ms=1000, backoff_max_ms=8000)
    now = 0
    for ceiling in (1000, 2000, 4000, 8000, 8000, 8000):
        client.poll(now)
        assert isinstance(client.error, ConnectionRefusedError)
        wait = client.next_retry_ms(now)
        assert ceiling // 2 <= wait <= ceiling
        client.poll(now + wait - 1)  # not due yet: no attempt, so the wait is not restarted
        assert client.next_retry_ms(now + wait - 1) == 1
        now += wait


def test_attempt_failing_before_a_socket_exists_backs_off_too() -> None:
    client = Client(DEV, "127.0.0.1", "no-such-service")  # getaddrinfo fails: no socket is made
    client.poll(0)
    assert isinstance(client.error, OSError) and not client.connected
    assert 500 <= client.next_retry_ms(0) <= 1000


def test_backoff_jitter_spreads_a_fleet() -> None:
    port = free_port()
    waits = set()
    for i in range(20):
        client = Client(f"bin-{i:04d}", "127.0.0.1", port, backoff_ms=1000)
        client.poll(0)
        waits.add(client.next_retry_ms(0))
    assert len(waits) > 10


def test_backoff_restarts_after_a_good_connection(mosquitto) -> None:
    mosquitto.stop()
    client = Client(DEV, mosquitto.host, mosquitto.port, backoff_ms=1000, backoff_max_ms=60000)
    now = 0
    for _ in range(4):  # waits of up to 1, 2, 4, 8 s
        client.poll(now)
        now += client.next_retry_ms(now)
    mosquitto.start()
    deadline = time.monotonic() + WAIT
    while not client.connected:  # virtual time stands still; the CONNACK arrives in real time
        assert time.monotonic() < deadline, client.error
        client.poll(now)
        time.sleep(0.01)
    mosquitto.kill()
    while client.connected:
        assert time.monotonic() < deadline
        client.poll(now)
        time.sleep(0.01)
    assert 500 <= client.next_retry_ms(now) <= 1000


def test_persistent_session_gets_commands_sent_while_offline(mosquitto, device, peer) -> None:
    first = device(mosquitto, clean=0)
    first.expect("SUBSCRIBED")
    os.kill(first.pid, signal.SIGKILL)
    watcher = peer(mosquitto, subscribe=STATE)
    while watcher.next(STATE).payload != b"offline":  # the broker has noticed the device is gone
        pass
    peer(mosquitto, "gateway").publish(DOWN, b"queued-cmd", qos=1)
    again = device(mosquitto, clean=0)
    again.expect(f"MSG {DOWN} 10 queued-cmd$")


def test_clean_session_drops_commands_sent_while_offline(mosquitto, device, peer) -> None:
    first = device(mosquitto)  # clean=1, the default
    first.expect("SUBSCRIBED")
    os.kill(first.pid, signal.SIGKILL)
    watcher = peer(mosquitto, subscribe=STATE)
    while watcher.next(STATE).payload != b"offline":
        pass
    gateway = peer(mosquitto, "gateway")
    gateway.publish(DOWN, b"lost-cmd", qos=1)
    again = device(mosquitto)
    again.expect("SUBSCRIBED")
    gateway.publish(DOWN, b"live-cmd", qos=1)
    again.expect(f"MSG {DOWN} 8 live-cmd$")
    assert not [line for line in again.lines if "lost-cmd" in line]
