"""`install-micropython` (what can be checked without a chip: the image, the esptool command lines, the real
esptool finding no chip) and `ports`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo  # type: ignore[import-untyped]

from gateway.tools.install_micropython import Image, check_image, esptool_commands
from gateway.tools.ports import format_ports
from gateway.tools.steps import StepError
from tests.harness.pty_serial import PtySerial


def esp_image(path: Path, chip_id: int, size: int = 1500 * 1024) -> Path:
    """The first bytes of an ESP-IDF image header (magic 0xE9, segments, SPI mode/size, entry, extended
    header with the chip id at byte 12), the rest filler."""
    header = bytes([0xE9, 3, 2, 0x20]) + (0x400805F0).to_bytes(4, "little") + bytes([0xEE, 0, 0, 0])
    header += chip_id.to_bytes(2, "little") + bytes(2)
    path.write_bytes(header + bytes(size - len(header)))
    return path


def kerbline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.tools.cli", "device", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("chip_id", "chip", "offset"), [(0, "esp32", 0x1000), (2, "esp32s2", 0x1000),
                                                         (9, "esp32s3", 0x0), (5, "esp32c3", 0x0)])
def test_the_image_header_names_the_chip_and_address(tmp_path: Path, chip_id: int, chip: str, offset: int) -> None:
    image = check_image(esp_image(tmp_path / "fw.bin", chip_id))
    assert (image.chip, image.offset, image.size) == (chip, offset, 1500 * 1024)


@pytest.mark.parametrize(("content", "why"), [
    (b"<!DOCTYPE html><html>404 Not Found</html>" + bytes(70000), "is not an ESP firmware image"),
    (b"UF2\n\x57\x51\x5d\x9e" + bytes(70000), "is not an ESP firmware image"),
    (bytes([0xE9]) + bytes(100), "is 101 bytes: a MicroPython image is 64 KB to 16 MB"),
])
def test_a_wrong_file_is_refused(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(content)
    with pytest.raises(StepError, match=why):
        check_image(path)


def test_an_unknown_chip_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"a chip these tools do not know \(chip id 99\)"):
        check_image(esp_image(tmp_path / "fw.bin", 99))
    with pytest.raises(StepError, match="does not exist"):
        check_image(tmp_path / "nope.bin")


def test_esptool_command_lines() -> None:
    image = Image(Path("/media/fw.bin"), "esp32", 0x1000, 1500 * 1024)
    commands = esptool_commands("/dev/ttyUSB0", image, baud=921600, connect_attempts=3)
    base = [sys.executable, "-m", "esptool", "--port", "/dev/ttyUSB0", "--chip", "esp32", "--baud", "921600",
            "--connect-attempts", "3"]
    assert commands == {"chip": [*base, "--after", "no-reset", "read-mac"],
                        "erase": [*base, "--after", "no-reset", "erase-flash"],
                        "write": [*base, "write-flash", "0x1000", "/media/fw.bin"]}
    s3 = esptool_commands("/dev/ttyACM0", Image(Path("s3.bin"), "esp32s3", 0x0, 1))
    assert s3["write"][-2:] == ["0x0", "s3.bin"] and s3["chip"][6] == "esp32s3"


def test_no_chip_on_the_port_stops_before_erasing(tmp_path: Path) -> None:
    image = esp_image(tmp_path / "fw.bin", 0)
    with PtySerial() as silent:  # a port where no bootloader answers: the real esptool tries and gives up
        run = kerbline("install-micropython", "--port", silent.path, "--image", str(image),
                       "--connect-attempts", "1")
    assert run.returncode == 1
    assert "install-micropython failed at step [2/4] 'chip': no esp32 bootloader answered" in run.stderr
    assert "hold BOOT, press and release EN (RESET), release BOOT" in run.stderr
    assert "[3/4] erase" not in run.stdout
    assert "Failed to connect to ESP32" in run.stdout  # esptool's own words are shown as progress


def test_a_wrong_file_never_reaches_the_port(tmp_path: Path) -> None:
    (tmp_path / "firmware.uf2").write_bytes(b"UF2\n" + bytes(70000))
    run = kerbline("install-micropython", "--port", "/dev/ttyUSB0", "--image", str(tmp_path / "firmware.uf2"))
    assert run.returncode == 1
    assert "failed at step [1/4] 'image'" in run.stderr and "not a .uf2" in run.stderr


def test_no_port(tmp_path: Path) -> None:
    run = kerbline("install-micropython", "--port", str(tmp_path / "ttyUSB3"), "--image",
                   str(esp_image(tmp_path / "fw.bin", 0)))
    assert run.returncode == 1
    assert f"failed at step [2/4] 'chip': no board: {tmp_path / 'ttyUSB3'} does not exist" in run.stderr


def test_ports_are_listed_with_usb_ids_and_known_bridges() -> None:
    devkit = ListPortInfo("/dev/ttyUSB0", skip_link_detection=True)
    devkit.vid, devkit.pid, devkit.serial_number = 0x10C4, 0xEA60, "0001"
    devkit.description = "CP2102 USB to UART Bridge Controller"
    onboard = ListPortInfo("/dev/ttyS0", skip_link_detection=True)
    text = format_ports([devkit, onboard], {"/dev/ttyUSB0": "/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0"})
    assert text.splitlines() == [
        "PORT          USB ID     SERIAL  DESCRIPTION",
        "/dev/ttyUSB0  10c4:ea60  0001    CP2102 USB to UART Bridge Controller [CP210x: most ESP32 DevKits]",
        "              stable name: /dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0",
        "/dev/ttyS0    -          -       -",
    ]
    assert "no serial ports found" in format_ports([])


def test_ports_command_runs() -> None:
    run = kerbline("ports")
    assert run.returncode == 0 and run.stdout.strip()
