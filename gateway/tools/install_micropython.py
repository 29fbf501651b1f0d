"""`kerbline device install-micropython --port PORT --image FILE`: MicroPython onto a bare ESP32, with esptool.

The image is a file the technician already has (micropython.org's .bin for the board); nothing is
downloaded. Steps:
1. image  the file is an ESP firmware image (first byte 0xE9) and its header names the chip it is for
          (the extended header's chip id: 0 ESP32, 2 S2, 5 C3, 9 S3, 12 C2, 13 C6, 16 H2); that also gives
          the address it goes to (0x1000 on the ESP32 and S2, 0x0 on the others)
2. chip   esptool reaches the bootloader and checks the chip is that chip (`--chip` makes esptool refuse
          another one), before anything is erased
3. erase  the whole flash (old filesystems and configs go: a device is provisioned from scratch after)
4. write  the image at its address
esptool runs as `python -m esptool` from the tools' own environment; its output is shown as progress.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.tools.steps import StepError, Steps

IMAGE_MAGIC = 0xE9
CHIP_ID_OFFSET = 12
CHIPS = {0x0000: "esp32", 0x0002: "esp32s2", 0x0005: "esp32c3", 0x0009: "esp32s3", 0x000C: "esp32c2",
         0x000D: "esp32c6", 0x0010: "esp32h2"}
OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000}  # every other chip: 0x0
MIN_IMAGE = 64 * 1024
MAX_IMAGE = 16 * 1024 * 1024
TIMEOUT_S = {"chip": 60.0, "erase": 180.0, "write": 300.0}
STEPS = ["image", "chip", "erase", "write"]
NO_CHIP_FIX = ("put the board in its bootloader: hold BOOT, press and release EN (RESET), release BOOT, "
               "then retry; check that the USB cable carries data and the port is the board's "
               "(`kerbline device ports`)")


@dataclass(frozen=True)
class Image:
    path: Path
    chip: str
    offset: int
    size: int


def check_image(path: Path) -> Image:
    """The image's chip and address, or a StepError saying why the file is not one."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise StepError(f"{path} does not exist", "give the path of the MicroPython .bin you downloaded") from None
    except OSError as exc:
        raise StepError(f"cannot read {path}: {exc.strerror}", "check the file and its permissions") from None
    wrong = "use the .bin for your board from micropython.org/download (not a .uf2, .hex, .zip or .elf)"
    if len(head) < 16 or head[0] != IMAGE_MAGIC:
        raise StepError(f"{path} is not an ESP firmware image (it does not begin with the byte 0xE9)", wrong)
    if not MIN_IMAGE <= size <= MAX_IMAGE:
        raise StepError(f"{path} is {size} bytes: a MicroPython image is {MIN_IMAGE // 1024} KB to "
                        f"{MAX_IMAGE // (1024 * 1024)} MB", wrong)
    chip_id = int.from_bytes(head[CHIP_ID_OFFSET:CHIP_ID_OFFSET + 2], "little")
    chip = CHIPS.get(chip_id)
    if chip is None:
        raise StepError(f"{path} is an image for a chip these tools do not know (chip id {chip_id})", wrong)
    return Image(path, chip, OFFSETS.get(chip, 0x0), size)


def esptool_commands(port: str, image: Image, baud: int = 460800, connect_attempts: int = 7) -> dict[str, list[str]]:
    """The esptool command lines, by step (esptool v5 syntax)."""
    base = [sys.executable, "-m", "esptool", "--port", port, "--chip", image.chip, "--baud", str(baud),
            "--connect-attempts", str(connect_attempts)]
    return {
        "chip": [*base, "--after", "no-reset", "read-mac"],
        "erase": [*base, "--after", "no-reset", "erase-flash"],
        "write": [*base, "write-flash", hex(image.offset), str(image.path)],
    }


def install(port: str, image_path: Path, baud: int = 460800, connect_attempts: int = 7,
            steps: Steps | None = None) -> Image:
    steps = steps or Steps(f"install MicroPython on {port}", STEPS)
    with steps.step("image") as step:
        image = check_image(image_path)
        step.done(f"{image.chip} image, {image.size / 1024:.0f} KB, goes at {hex(image.offset)}")
    commands = esptool_commands(port, image, baud, connect_attempts)
    for name in ("chip", "erase", "write"):
        with steps.step(name) as step:
            if not os.path.exists(port):
                raise StepError(f"no board: {port} does not exist", NO_CHIP_FIX)
            _check(_run(commands[name], step.progress, TIMEOUT_S[name]), image)
            step.done()
    return image


def _run(argv: list[str], progress: Callable[[str], None], timeout: float) -> tuple[int, str]:
    """Run esptool, streaming its lines as progress; (exit status, all output)."""
    import threading

    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=env, start_new_session=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                lines.append(line)
                progress(line)
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "\n".join(lines)


def _check(result: tuple[int, str], image: Image) -> None:
    status, output = result
    if status == 0:
        return
    if status == -9:
        raise StepError("esptool stopped answering (killed after its time ran out)", NO_CHIP_FIX)
    if "Wrong --chip" in output or "Wrong chip" in output or "This chip is" in output:
        found = next((line for line in output.splitlines() if "This chip is" in line), "another chip")
        raise StepError(f"the image is for {image.chip} but the board's chip is not ({found.strip()})",
                        "use the MicroPython image made for this board's chip")
    if "Failed to connect" in output or "No serial data received" in output:
        raise StepError(f"no {image.chip} bootloader answered", NO_CHIP_FIX)
    if "could not open port" in output or "port is busy" in output:
        raise StepError("the port cannot be opened: it is busy or gone",
                        "close other programs using it (mpremote, a monitor, the gateway), replug the board")
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    raise StepError(f"esptool failed: {(errors or output.splitlines() or ['no output'])[-1].strip()}",
                    "read esptool's output above; retry at a lower speed with --baud 115200")
