"""The virtual board against the real `mpremote` (and pyserial for the protocol details mpremote hides).

Every test starts a board on a fresh flash directory; every subprocess and read has a timeout.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from simulator.board import VirtualBoard
from simulator.board.repl import RX_LIMIT, Phase
from simulator.board.vm import STDIN_PIPE_SIZE

pytestmark = pytest.mark.timeout(90)

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
CMD_TIMEOUT = 30.0
BOOT_TIMEOUT = 10.0


def mpremote(board: VirtualBoard, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One `mpremote connect <port> ...` invocation, as a technician would type it."""
    result = subprocess.run([MPREMOTE, "connect", board.port, *args], capture_output=True, text=True,
                            timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, f"mpremote {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def read_until(port: serial.Serial, marker: bytes, timeout: float = 5.0) -> bytes:
    """Read from the board until `marker` arrives; fail with what came if it does not."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(marker):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} from the board; got {data!r}")
        data += port.read(1)
    return data


def wait_for(condition: Callable[[], bool], timeout: float = BOOT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def flash(tmp_path: Path) -> Path:
    path = tmp_path / "flash"
    path.mkdir()
    return path


@pytest.fixture
def board(flash: Path) -> Iterator[VirtualBoard]:
    with VirtualBoard(flash, heap="128k") as started:
        assert started.wait_for_prompt(BOOT_TIMEOUT)
        yield started


@pytest.fixture
def console(board: VirtualBoard) -> Iterator[serial.Serial]:
    port = serial.Serial(board.port, 115200, timeout=0.2)
    yield port
    port.close()


# -- mpremote commands --------------------------------------------------------------------------------


def test_exec_and_eval_share_state_within_one_connection(board: VirtualBoard) -> None:
    result = mpremote(board, "exec", "import sys\nx = 41", "+", "eval", "x + 1", "+",
                      "exec", "print(sys.implementation.name)")
    assert result.stdout.split() == ["42", "micropython"]


def test_each_connection_starts_with_a_soft_reset(board: VirtualBoard) -> None:
    mpremote(board, "exec", "x = 1")
    result = mpremote(board, "eval", "x", check=False)
    assert result.returncode == 1
    assert "NameError" in result.stdout


def test_long_output_reaches_a_listening_tool_complete(board: VirtualBoard) -> None:
    result = mpremote(board, "exec", "for i in range(20000):\n    print(i)")
    assert result.stdout.split() == [str(i) for i in range(20000)]


def test_exec_error_is_reported_with_its_traceback(board: VirtualBoard) -> None:
    result = mpremote(board, "exec", "def f():\n    raise ValueError('bad value')\nf()", check=False)
    assert result.returncode == 1
    assert 'File "<stdin>", line 2, in f' in result.stdout
    assert "ValueError: bad value" in result.stdout
    assert "vboard_driver" not in result.stdout


def test_files_written_by_code_land_in_the_flash_directory(board: VirtualBoard, flash: Path) -> None:
    mpremote(board, "exec", "open('/a.txt', 'w').write('abs')\nopen('b.txt', 'w').write('rel')\n"
                            "import os\nos.mkdir('/lib')\nopen('/lib/c.txt', 'w').write('deep')")
    assert (flash / "a.txt").read_text() == "abs"
    assert (flash / "b.txt").read_text() == "rel"
    assert (flash / "lib" / "c.txt").read_text() == "deep"


def test_large_binary_file_copies_intact_both_ways(board: VirtualBoard, flash: Path, tmp_path: Path) -> None:
    data = os.urandom(40 * 1024)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    mpremote(board, "fs", "cp", str(local), ":big.bin")
    assert (flash / "big.bin").read_bytes() == data
    back = tmp_path / "back.bin"
    mpremote(board, "fs", "cp", ":big.bin", str(back))
    assert back.read_bytes() == data
    result = mpremote(board, "fs", "sha256sum", ":big.bin")
    assert hashlib.sha256(data).hexdigest() in result.stdout


def test_fs_mkdir_ls_cat_rm(board: VirtualBoard, flash: Path, tmp_path: Path) -> None:
    source = tmp_path / "cfg.py"
    source.write_text("PERIOD = 30\n")
    result = mpremote(board, "fs", "mkdir", ":lib", "+", "fs", "cp", str(source), ":lib/cfg.py", "+",
                      "fs", "ls", ":lib", "+", "fs", "cat", ":lib/cfg.py")
    assert (flash / "lib" / "cfg.py").read_text() == "PERIOD = 30\n"
    lines = result.stdout.splitlines()
    assert any(line.split() == ["12", "cfg.py"] for line in lines), result.stdout
    assert "PERIOD = 30" in result.stdout
    mpremote(board, "fs", "rm", ":lib/cfg.py")
    assert not (flash / "lib" / "cfg.py").exists()
    result = mpremote(board, "fs", "ls", ":")
    assert result.stdout.split()[-2:] == ["0", "lib/"]


def test_modules_copied_to_flash_import_from_lib(board: VirtualBoard, tmp_path: Path) -> None:
    module = tmp_path / "greeting.py"
    module.write_text("TEXT = 'from lib'\n")
    result = mpremote(board, "fs", "mkdir", ":lib", "+", "fs", "cp", str(module), ":lib/greeting.py", "+",
                      "exec", "import greeting\nprint(greeting.TEXT)")
    assert result.stdout.splitlines()[-1] == "from lib"


def test_run_streams_output_while_the_script_runs(board: VirtualBoard, flash: Path, tmp_path: Path) -> None:
    script = tmp_path / "wait_for_go.py"
    script.write_text(
        "import os, time\n"
        "print('waiting for go')\n"
        "while True:\n"
        "    try:\n"
        "        os.stat('/go')\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep_ms(10)\n"
        "print('got go')\n")
    proc = subprocess.Popen([MPREMOTE, "connect", board.port, "run", str(script)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        # The first line arrives while the script is still waiting: output streams, it is not batched.
        assert proc.stdout.readline() == b"waiting for go\r\n"  # a board sends CR LF
        assert board.phase is Phase.RUN
        (flash / "go").write_text("")
        assert proc.stdout.readline() == b"got go\r\n"
        assert proc.wait(timeout=CMD_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_from_the_next_mpremote_stops_a_runaway_loop(board: VirtualBoard) -> None:
    mpremote(board, "exec", "--no-follow", "n = 0\nwhile True:\n    n += 1")
    wait_for(lambda: board.phase is Phase.RUN)
    result = mpremote(board, "exec", "print('board is responsive')")
    assert result.stdout.strip() == "board is responsive"
    assert board.stats["interrupts"] >= 1


def test_soft_reset_command_clears_state_and_runs_boot_py(board: VirtualBoard, flash: Path) -> None:
    (flash / "boot.py").write_text("booted = True\nopen('/boot.log', 'a').write('b')\n")
    (flash / "main.py").write_text("open('/main.log', 'a').write('m')\n")
    result = mpremote(board, "exec", "x = 1", "+", "soft-reset", "+", "exec",
                      "print('x' in globals(), booted)", check=False)
    assert result.stdout.split() == ["False", "True"]
    # Soft resets from the raw REPL run boot.py but not main.py, like a real board.
    assert len((flash / "boot.log").read_text()) >= 2
    assert not (flash / "main.log").exists()


def test_reset_command_restarts_board_running_boot_then_main(board: VirtualBoard, flash: Path) -> None:
    (flash / "boot.py").write_text("open('/order.log', 'a').write('boot ')\n")
    (flash / "main.py").write_text(
        "import machine\nopen('/order.log', 'a').write('main cause=%d ' % machine.reset_cause())\n")
    boots = board.boot_count
    mpremote(board, "reset")
    wait_for(lambda: board.boot_count > boots and board.phase is Phase.IDLE)
    log = (flash / "order.log").read_text().split()
    assert log[-3:] == ["boot", "main", "cause=5"]  # machine.SOFT_RESET, as on an ESP32
    assert board.stats["hard_resets"] == 1
    # A soft reset (every mpremote connection starts with one) keeps the hardware reset cause.
    result = mpremote(board, "exec", "import machine\nprint(machine.reset_cause())")
    assert result.stdout.strip() == "5"


def test_mpremote_interrupts_main_py_before_entering_raw_repl(flash: Path) -> None:
    (flash / "main.py").write_text("import time\nwhile True:\n    time.sleep_ms(5)\n")
    with VirtualBoard(flash) as board:
        wait_for(lambda: board.phase is Phase.BOOT and board.boot_count == 1)
        result = mpremote(board, "exec", "print('in')")
        assert result.stdout.strip() == "in"


def test_power_cycle_runs_boot_and_main_with_power_on_cause(board: VirtualBoard, flash: Path) -> None:
    (flash / "main.py").write_text("import machine\nopen('/cause.log', 'w').write(str(machine.reset_cause()))\n")
    board.power_cycle()
    assert board.wait_for_prompt(BOOT_TIMEOUT)
    assert (flash / "cause.log").read_text() == "1"  # machine.PWRON_RESET


def test_board_keeps_running_across_connections(board: VirtualBoard) -> None:
    for _ in range(3):
        port = serial.Serial(board.port, 115200, timeout=0.2)
        port.close()
    mpremote(board, "exec", "print(1)")
    result = mpremote(board, "eval", "2 * 21")
    assert result.stdout.strip() == "42"
    assert board.boot_count == 3  # power-on plus one soft reset per mpremote connection


def test_output_with_nobody_listening_is_dropped_not_queued(board: VirtualBoard, flash: Path) -> None:
    (flash / "main.py").write_text("print('x' * 1000)\n")
    board.power_cycle()
    assert board.wait_for_prompt(BOOT_TIMEOUT)
    assert board.stats["tx_dropped_unplugged"] > 1000
    port = serial.Serial(board.port, 115200, timeout=0.3)
    try:
        assert port.read(2000) == b""  # no backlog of boot output waits for the next listener
    finally:
        port.close()


def test_heap_limit_raises_memory_error(flash: Path) -> None:
    with VirtualBoard(flash, heap="64k") as board:
        assert board.wait_for_prompt(BOOT_TIMEOUT)
        result = mpremote(board, "exec", "b = bytearray(100000)", check=False)
        assert result.returncode == 1
        assert "MemoryError" in result.stdout
        ok = mpremote(board, "exec", "b = bytearray(10000)\nprint(len(b))")
        assert ok.stdout.strip() == "10000"


def test_code_larger_than_the_bound_is_rejected_and_counted(flash: Path) -> None:
    with VirtualBoard(flash, max_code=1024) as board:
        assert board.wait_for_prompt(BOOT_TIMEOUT)
        result = mpremote(board, "exec", "x = 1\n" + "# padding\n" * 200, check=False)
        assert result.returncode == 1
        assert "MemoryError: code exceeds 1024 bytes" in result.stdout
        assert board.stats["code_too_large"] == 1
        assert mpremote(board, "eval", "1 + 1").stdout.strip() == "2"


# -- protocol details, over pyserial -------------------------------------------------------------------


def test_friendly_repl(board: VirtualBoard, console: serial.Serial) -> None:
    console.write(b"\x02")
    banner = read_until(console, b">>> ")
    assert b"MicroPython" in banner and b'Type "help()" for more information.' in banner
    console.write(b"6 * 7\r")
    assert read_until(console, b">>> ") == b"6 * 7\r\n42\r\n>>> "
    console.write(b"for i in range(2):\r")
    assert read_until(console, b"... ").endswith(b"for i in range(2):\r\n... ")
    console.write(b"    print('line', i)\r\r")
    assert read_until(console, b">>> ").endswith(b"line 0\r\nline 1\r\n>>> ")
    console.write(b"abc\x7f\x7f\x7fundefined_name\r")
    reply = read_until(console, b">>> ")
    assert b"\x08 \x08" in reply and b"NameError: name 'undefined_name' isn't defined" in reply
    console.write(b"half typed\x03")
    assert read_until(console, b">>> ").endswith(b"half typed\r\n>>> ")
    console.write(b"\x05")
    read_until(console, b"=== ")
    console.write(b"a = 5\rprint(a * 2)\x04")
    assert read_until(console, b">>> ").endswith(b"10\r\n>>> ")


def test_friendly_soft_reset_runs_boot_and_main(board: VirtualBoard, flash: Path, console: serial.Serial) -> None:
    (flash / "boot.py").write_text("print('boot here')\n")
    (flash / "main.py").write_text("print('main here')\n")
    console.write(b"\x02")
    read_until(console, b">>> ")
    console.write(b"\x04")
    reply = read_until(console, b">>> ")
    assert reply.startswith(b"\r\nMPY: soft reboot\r\nboot here\r\nmain here\r\nMicroPython")


def test_raw_repl_framing_and_soft_reset(board: VirtualBoard, flash: Path, console: serial.Serial) -> None:
    (flash / "boot.py").write_text("print('boot here')\n")
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"print('out')\n1/0\x04")
    reply = read_until(console, b"\x04>")
    assert reply == (b"OKout\r\n\x04Traceback (most recent call last):\r\n"
                     b'  File "<stdin>", line 2, in <module>\r\nZeroDivisionError: divide by zero\r\n\x04>')
    console.write(b"\x04")
    assert read_until(console, b">") == b"OK\r\nMPY: soft reboot\r\nboot here\r\nraw REPL; CTRL-B to exit\r\n>"
    console.write(b"import sys\nsys.exit()\x04")
    assert read_until(console, b"soft reboot\r\n") == b"OK\x04\x04MPY: soft reboot\r\n"
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"\x02")
    assert b"MicroPython" in read_until(console, b">>> ")


def test_raw_paste_handshake_and_flow_control(board: VirtualBoard, console: serial.Serial) -> None:
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"\x05A\x01")
    header = console.read(5)
    assert header[:2] == b"R\x01" and header[4:] == b"\x01"
    window = int.from_bytes(header[2:4], "little")
    assert window == 128
    code = b"s = 0\n" + b"s += 1\n" * 100 + b"print(s)\n"  # 806 bytes: 6 windows consumed
    console.write(code)
    assert read_until(console, b"\x01" * (len(code) // window)) == b"\x01" * (len(code) // window)
    console.write(b"\x04")
    assert read_until(console, b"\x04>") == b"\x04100\r\n\x04\x04>"
    console.write(b"\x05B\x01")
    assert console.read(3) == b"R\x00>"  # an unknown raw-paste sub-command is refused


def test_ctrl_c_interrupts_running_code_with_keyboard_interrupt(board: VirtualBoard,
                                                                console: serial.Serial) -> None:
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"print('started')\nwhile True:\n    pass\x04")
    read_until(console, b"started\r\n")
    console.write(b"\x03")
    reply = read_until(console, b"\x04>")
    # Where the interrupt lands (which line of the loop) is up to timing.
    assert re.fullmatch(rb'\x04Traceback \(most recent call last\):\r\n  File "<stdin>", line \d+, in <module>\r\n'
                        rb"KeyboardInterrupt: \r\n\x04>", reply), reply
    # State survives an interrupt (no reset).
    console.write(b"print('still here')\x04")
    assert read_until(console, b"\x04>") == b"OKstill here\r\n\x04\x04>"


def test_running_code_reads_console_input_and_the_rest_goes_to_the_repl(board: VirtualBoard,
                                                                        console: serial.Serial) -> None:
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"name = input('who? ')\nprint('hi', name)\x04")
    read_until(console, b"who? ")
    console.write(b"ada\rprint('left for the REPL')\x04")
    assert read_until(console, b"\x04>").endswith(b"hi ada\r\n\x04\x04>")
    # What input() did not read was not lost: the raw REPL took it as its next code.
    assert read_until(console, b"\x04>") == b"OKleft for the REPL\r\n\x04\x04>"
    # Code waiting for input is interrupted by Ctrl-C like any other.
    console.write(b"input()\x04")
    read_until(console, b"OK")
    console.write(b"\x03")
    assert read_until(console, b"\x04>").endswith(b"KeyboardInterrupt: \r\n\x04>")


def test_unread_input_is_bounded_and_the_excess_counted(board: VirtualBoard, flash: Path,
                                                         console: serial.Serial) -> None:
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"import os, sys, time\nprint('waiting')\nwhile True:\n    try:\n        os.stat('/go')\n"
                  b"        break\n    except OSError:\n        time.sleep_ms(5)\n"
                  b"print(sys.stdin.buffer.read(10))\x04")
    read_until(console, b"waiting\r\n")
    capacity = STDIN_PIPE_SIZE + RX_LIMIT
    console.write(b"0123456789" + b"y" * (capacity - 10 + 1000))
    wait_for(lambda: board.stats["rx_dropped"] >= 1000)
    # The kernel fills a pipe page by page, so its capacity in bytes can fall short by part of a page.
    assert board.stats["rx_dropped"] < 1000 + 4096
    (flash / "go").write_text("")
    assert read_until(console, b"\x04>").endswith(b"b'0123456789'\r\n\x04\x04>")
    # The unread "y"s went to the raw REPL's buffer; Ctrl-C clears it and the board goes on.
    console.write(b"\x03print('clean')\x04")
    assert read_until(console, b"\x04>") == b"OKclean\r\n\x04\x04>"


def test_kbd_intr_off_makes_ctrl_c_plain_input_for_that_run(board: VirtualBoard,
                                                             console: serial.Serial) -> None:
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"import micropython, sys\nmicropython.kbd_intr(-1)\nprint('binary')\n"
                  b"print(sys.stdin.buffer.read(3))\x04")
    read_until(console, b"binary\r\n")
    console.write(b"a\x03b")
    assert read_until(console, b"\x04>").endswith(b"b'a\\x03b'\r\n\x04\x04>")
    assert board.stats["crashes"] == 0
    # The next run has Ctrl-C back, as pyexec restores it for each execution.
    console.write(b"print('loop')\nwhile True:\n    pass\x04")
    read_until(console, b"loop\r\n")
    console.write(b"\x03")
    assert read_until(console, b"\x04>").endswith(b"KeyboardInterrupt: \r\n\x04>")


def test_mpremote_mount_serves_host_files_to_the_board(board: VirtualBoard, flash: Path,
                                                       tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "hostmod.py").write_text("WHERE = 'imported from the host'\n")
    blob = bytes(range(256)) * 40  # every byte value, Ctrl-C included
    (host / "blob.bin").write_bytes(blob)
    result = mpremote(board, "mount", str(host), "exec",
                      "import hostmod\nprint(hostmod.WHERE)\nd = open('blob.bin', 'rb').read()\n"
                      "open('/copy.bin', 'wb').write(d)")
    assert "imported from the host" in result.stdout
    assert (flash / "copy.bin").read_bytes() == blob


# -- failures ------------------------------------------------------------------------------------------


def test_vm_crash_is_reported_and_the_board_reboots(board: VirtualBoard, console: serial.Serial) -> None:
    console.write(b"\r\x01")
    read_until(console, b"raw REPL; CTRL-B to exit\r\n>")
    console.write(b"import os\nos.system('kill -9 $PPID')\x04")
    reply = read_until(console, b">>> ", timeout=BOOT_TIMEOUT)
    assert b"[virtual board] MicroPython VM exited (code -9): resetting" in reply
    assert board.stats["crashes"] == 1
    assert mpremote(board, "eval", "'up'").stdout.strip() == "up"


def test_board_halts_after_repeated_crashes_until_power_cycled(flash: Path) -> None:
    (flash / "boot.py").write_text("import os\nos.system('kill -9 $PPID')\n")
    with VirtualBoard(flash) as board:
        wait_for(lambda: board.phase is Phase.HALTED)
        assert board.stats["crashes"] == 3
        (flash / "boot.py").unlink()
        board.power_cycle()
        assert board.wait_for_prompt(BOOT_TIMEOUT)
        assert mpremote(board, "eval", "'alive'").stdout.strip() == "alive"


def test_missing_launcher_fails_at_start_and_leaves_nothing_open(flash: Path) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        VirtualBoard(flash, micropython="/nonexistent/micropython").start()
    assert len(os.listdir("/proc/self/fd")) == fds_before


# -- command line ----------------------------------------------------------------------------------------


def test_command_line_prints_the_port_and_stops_on_sigterm(flash: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simulator.board", "--flash", str(flash)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        result = subprocess.run([MPREMOTE, "connect", port, "eval", "'cli'"], capture_output=True, text=True,
                                timeout=CMD_TIMEOUT)
        assert result.stdout.strip() == "cli"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=CMD_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
