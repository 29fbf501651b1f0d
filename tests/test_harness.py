"""The shared fixtures do what other tests rely on: a real broker, a real heap-limited VM, a transparent pty."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiomqtt
import pytest

from tests.harness.micropython import MicroPythonResult
from tests.harness.mosquitto import Mosquitto, port_accepts

pytest_plugins = ["pytester"]


# --- mosquitto ---------------------------------------------------------------------------------------

async def _receive_one(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(aiter(client.messages))


async def test_broker_carries_a_qos1_message(mosquitto: Mosquitto) -> None:
    payload = bytes(range(256))
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="sub") as sub:
        await sub.subscribe("kerbline/#", qos=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="pub") as pub:
            await pub.publish("kerbline/dev1/report", payload, qos=1)
        message = await _receive_one(sub)
    assert str(message.topic) == "kerbline/dev1/report"
    assert message.payload == payload
    assert "New client connected" in mosquitto.log_text()


async def test_broker_restart_keeps_port_and_persisted_retained_message(mosquitto_factory) -> None:
    broker = mosquitto_factory(persistence=True)
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        await pub.publish("kerbline/state", b"kept", qos=1, retain=True)
    first_pid = broker.pid
    broker.restart()
    assert broker.running and broker.pid != first_pid
    async with aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe("kerbline/state", qos=1)
        message = await _receive_one(sub)
    assert message.payload == b"kept" and message.retain


def test_broker_stop_refuses_connections_until_start(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    assert not mosquitto.running
    assert not port_accepts(mosquitto.host, mosquitto.port)
    mosquitto.start()
    assert port_accepts(mosquitto.host, mosquitto.port)


async def test_broker_extra_config_is_applied(mosquitto_factory, tmp_path: Path) -> None:
    # A password file the broker cannot read must stop it at start-up, with the reason in the error.
    broker = mosquitto_factory(start=False, allow_anonymous=False,
                               extra_config=[f"password_file {tmp_path / 'missing.passwd'}"])
    with pytest.raises(Exception, match="missing.passwd") as excinfo:
        broker.start(timeout=5)
    assert str(broker.log_path) in str(excinfo.value)
    assert not broker.running


def test_two_brokers_are_independent(mosquitto_factory) -> None:
    a, b = mosquitto_factory(), mosquitto_factory()
    assert a.port != b.port
    a.stop()
    assert port_accepts(b.host, b.port)


def test_failed_test_shows_and_keeps_broker_log(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest("from tests.harness.plugin import *\n")
    pytester.makepyfile("""
        def test_fails(mosquitto):
            assert False, "deliberate"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mosquitto 127.0.0.1:* log (kept at *test-artifacts*)*",
                                 "*mosquitto version * running*"])
    kept = [line for line in result.stdout.lines if "kept at" in line][0]
    path = Path(kept.split("kept at ", 1)[1].split(")", 1)[0])
    try:
        assert "running" in path.read_text()
    finally:
        path.unlink()
        path.parent.rmdir()


# --- MicroPython -------------------------------------------------------------------------------------

def test_micropython_exit_status_stdout_and_args(micropython) -> None:
    result: MicroPythonResult = micropython(
        "import sys\nprint('argv', sys.argv[1:])\nprint(sys.implementation.name)\nsys.exit(3)",
        args=["a", "b c"])
    assert result.returncode == 3, result.describe()
    assert result.stdout.splitlines() == ["argv ['a', 'b c']", "micropython"]
    assert not result.timed_out


def test_micropython_script_file_stdin_and_env(micropython, tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text("import sys, os\nprint(sys.stdin.read().upper(), os.getenv('KERBLINE_X'))\n")
    result = micropython(script, stdin=b"hello", env={"KERBLINE_X": "42"})
    assert result.ok, result.describe()
    assert result.stdout == "HELLO 42\n"


def test_micropython_uncaught_exception_fails_with_traceback(micropython) -> None:
    result = micropython("def f():\n    raise ValueError('boom')\nf()\n")
    assert result.returncode == 1
    assert "ValueError: boom" in result.output
    assert 'File "<script>", line 2' in result.output


def test_micropython_heap_limit_is_enforced(micropython) -> None:
    grab = "b = bytearray(200 * 1024)\nprint('allocated')\n"
    small = micropython(grab, heap="64k")
    assert small.returncode == 1
    assert "MemoryError" in small.output and "allocated" not in small.stdout
    large = micropython(grab, heap="512k")
    assert large.ok and "allocated" in large.stdout, large.describe()


def test_micropython_timeout_kills_the_vm(micropython) -> None:
    result = micropython("import time\nprint('started')\nwhile True:\n    time.sleep(0.05)\n", timeout=1.0)
    assert result.timed_out
    assert result.returncode < 0


def test_micropython_imports_firmware_package(micropython) -> None:
    result = micropython("from kerbline.compat import const\nX = const(7)\nprint(X)\n")
    assert result.ok, result.describe()
    assert result.stdout == "7\n"


def test_micropython_without_firmware_cannot_import_it(micropython) -> None:
    result = micropython("import kerbline\n", firmware=None)
    assert result.returncode == 1 and "ImportError" in result.output


def test_micropython_vfs_root_is_the_filesystem(micropython, tmp_path: Path) -> None:
    root = tmp_path / "flash"
    root.mkdir()
    secret = tmp_path / "outside.txt"
    secret.write_text("host file")
    script = f"""
import os
with open('/x', 'w') as f:
    f.write('written')
os.mkdir('/sub')
os.chdir('sub')
with open('y', 'w') as f:
    f.write('relative')
print(os.getcwd())
print(sorted(os.listdir('/..')))
for p in ('/../outside.txt', '../../outside.txt', {str(secret)!r}, '/etc/hostname'):
    try:
        open(p).read()
        print('VISIBLE', p)
    except OSError:
        pass
"""
    result = micropython(script, vfs_root=root, firmware=None)
    assert result.ok, result.describe()
    assert (root / "x").read_text() == "written"
    assert (root / "sub" / "y").read_text() == "relative"
    assert result.stdout.splitlines() == ["/sub", "['sub', 'x']"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flash", "outside.txt"]


def test_micropython_vfs_root_prefers_flash_copy_over_firmware(micropython, tmp_path: Path) -> None:
    (tmp_path / "kerbline").mkdir()
    (tmp_path / "kerbline" / "__init__.py").write_text("WHERE = 'flash'\n")
    result = micropython("import kerbline, sys\nprint(getattr(kerbline, 'WHERE', 'repo'), sys.path)\n",
                         vfs_root=tmp_path)
    assert result.ok, result.describe()
    assert result.stdout == "flash ['', '.frozen', '/lib', '/.firmware']\n"
    from_repo = micropython("import kerbline.compat\nprint('repo')\n", vfs_root=tmp_path / "kerbline")
    assert from_repo.stdout == "repo\n", from_repo.describe()


def test_micropython_process_streams_and_interrupts(micropython_process) -> None:
    proc = micropython_process(
        "import sys\nprint('ready')\ntry:\n    while True:\n        line = sys.stdin.readline()\n"
        "        print(line.strip().upper())\nexcept KeyboardInterrupt:\n    print('interrupted')\n"
        "    sys.exit(5)\n")
    assert proc.stdout.readline() == b"ready\n"
    proc.stdin.write(b"bin 7\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"BIN 7\n"
    proc.interrupt()
    assert proc.wait(10) == 5
    assert proc.stdout.readline() == b"interrupted\n"


def test_micropython_arguments_of_any_length_reach_the_program(micropython) -> None:
    # they travel in the environment: the unix port aborts on a command-line argument of 256 bytes or more
    result = micropython("import sys\nprint(len(sys.argv[1]), sys.argv[2:])", args=["x" * 3000, ""])
    assert result.stdout.split() == ["3000", "['']"] and result.ok, result.describe()
    with pytest.raises(ValueError, match="separator"):
        micropython("pass", args=["a\x1fb"])


# --- pty serial --------------------------------------------------------------------------------------

SPECIAL = bytes([0x00, 0x03, 0x04, 0x0D, 0x0A, 0x11, 0x13, 0x1A, 0x1C, 0x7F, 0xFF])


def test_pty_master_to_port_is_transparent(pty_serial) -> None:
    data = SPECIAL + bytes(range(256)) + SPECIAL
    pty_serial.write_master(data)
    assert pty_serial.port.read(len(data)) == data


def test_pty_port_to_master_is_transparent(pty_serial) -> None:
    data = SPECIAL + bytes(range(256)) + SPECIAL
    pty_serial.port.write(data)
    pty_serial.port.flush()
    assert pty_serial.read_master(len(data), timeout=5) == data


def test_pty_port_is_a_real_serial_port(pty_serial) -> None:
    assert pty_serial.port.is_open and pty_serial.port.baudrate == 115200
    assert os.path.realpath(pty_serial.port.port) == os.path.realpath(pty_serial.path)
    assert pty_serial.read_master(1, timeout=0.05) == b""  # nothing echoed back
