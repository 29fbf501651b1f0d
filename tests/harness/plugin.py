"""The pytest face of the harness: fixtures every test can request, and the hook that tracks failures.

Fixtures:
- `mosquitto`: a started broker (`Mosquitto`: host, port, log_path, config_path, start/stop/restart).
- `mosquitto_factory(**Mosquitto kwargs, start=True)`: more brokers, or brokers with ACL/password files,
  persistence, extra config lines. All are stopped at teardown; when the test failed, each log is
  shown in the report and copied to test-artifacts/<test id>/.
- `micropython`: `run_micropython` (see tests.harness.micropython).
- `micropython_process(script, ...)`: `start_micropython` whose processes are closed at teardown.
- `pty_serial`: a `PtySerial` (pyserial port on the slave end, raw master fd).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.micropython import MicroPythonProcess, run_micropython, start_micropython
from tests.harness.mosquitto import Mosquitto
from tests.harness.pty_serial import PtySerial
from tests.harness.reporting import artifact_dir, attach_on_failure, record_report, tail, test_failed


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    record_report(item, report)
    return report


@pytest.fixture
def mosquitto_factory(request: pytest.FixtureRequest,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Mosquitto]]:
    """Make brokers: `mosquitto_factory(persistence=True, extra_config=[...], start=True)`."""
    brokers: list[Mosquitto] = []
    keep = artifact_dir(request)

    def make(*, start: bool = True, **kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), **kwargs)
        brokers.append(broker)
        kept = keep / f"mosquitto-{broker.port}.log"
        attach_on_failure(request, f"mosquitto {broker.host}:{broker.port} log (kept at {kept})",
                          lambda: tail(broker.log_text()))
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()
    if test_failed(request):
        keep.mkdir(parents=True, exist_ok=True)
        for broker in brokers:
            if broker.log_path.exists():
                shutil.copyfile(broker.log_path, keep / f"mosquitto-{broker.port}.log")


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """One started anonymous broker on a free loopback port."""
    return mosquitto_factory()


@pytest.fixture
def micropython() -> Callable[..., Any]:
    """`micropython(script, heap="64k", vfs_root=None, timeout=30, args=(), env=None, stdin=None)`."""
    return run_micropython


@pytest.fixture
def micropython_process() -> Iterator[Callable[..., MicroPythonProcess]]:
    """Start long-running VMs (`start_micropython` arguments); every one is closed at teardown."""
    started: list[MicroPythonProcess] = []

    def start(*args: Any, **kwargs: Any) -> MicroPythonProcess:
        proc = start_micropython(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


@pytest.fixture
def pty_serial() -> Iterator[PtySerial]:
    """A pty pair: `.port` (pyserial on the slave), `.master_fd`, `.path`, write_master/read_master."""
    with PtySerial() as pair:
        yield pair
