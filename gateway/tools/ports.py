"""`kerbline device ports`: which serial port is the board, by its USB ids, so nobody flashes the wrong one.

pyserial's `list_ports` gives each port's USB vendor:product id, serial number and description; the
USB-serial chips found on ESP32 boards are named, and /dev/serial/by-id/ names are shown because they
stay the same across replugs (the gateway's config should use them).
"""
from __future__ import annotations

import os
from pathlib import Path

from serial.tools import list_ports as _list_ports  # type: ignore[import-untyped]  # pyserial ships no stubs
from serial.tools.list_ports_common import ListPortInfo  # type: ignore[import-untyped]

BY_ID = Path("/dev/serial/by-id")
# USB ids of the bridges ESP32 boards carry (and Espressif's own USB on the S2/S3/C3/C6).
KNOWN_BRIDGES = {
    (0x10C4, 0xEA60): "CP210x: most ESP32 DevKits",
    (0x1A86, 0x7523): "CH340: ESP32 boards, many clones",
    (0x1A86, 0x55D4): "CH9102: newer ESP32 DevKits",
    (0x0403, 0x6001): "FTDI FT232R: a USB-serial adapter (link UART?)",
    (0x0403, 0x6015): "FTDI FT231X: a USB-serial adapter",
    (0x303A, 0x1001): "Espressif USB (ESP32-S3/C3/C6)",
    (0x303A, 0x4001): "Espressif USB (ESP32-S2)",
}


def list_ports() -> list[ListPortInfo]:
    return sorted(_list_ports.comports(), key=lambda p: p.device)


def _by_id_names() -> dict[str, str]:
    """Real device path -> its stable /dev/serial/by-id/ name."""
    try:
        entries = list(BY_ID.iterdir())
    except OSError:
        return {}
    return {os.path.realpath(e): str(e) for e in entries}


def format_ports(ports: list[ListPortInfo], by_id: dict[str, str] | None = None) -> str:
    if not ports:
        return ("no serial ports found: plug the board in with a data USB cable (charge-only cables are "
                "common); on Linux `dmesg | tail` shows whether the USB-serial chip was seen")
    names = _by_id_names() if by_id is None else by_id
    rows = [("PORT", "USB ID", "SERIAL", "DESCRIPTION", "")]
    for p in ports:
        usb = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "-"
        hint = KNOWN_BRIDGES.get((p.vid, p.pid)) if p.vid is not None else None
        text = p.description if p.description and p.description != "n/a" else (p.product or "-")
        if hint:
            text += f" [{hint}]"
        rows.append((p.device, usb, p.serial_number or "-", text, names.get(os.path.realpath(p.device), "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
        if r[4]:
            lines.append(f"{'':<{widths[0]}}  stable name: {r[4]}")
    return "\n".join(lines)
