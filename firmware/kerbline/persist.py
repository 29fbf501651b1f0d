"""What survives a reboot: the boot counter on flash, the running state in RTC memory.

Boot counter (/boot.cnt, decimal text): +1 at every boot that is not a wake from deep sleep, written to a
temp file and renamed over the old one before the boot's first report, so a power cut at any point leaves
the old or the new number and (boot, seq) never repeats. A counter that exists but cannot be read is an
error (safe mode), never a silent restart at 1, which would make the gateway drop the reports as
duplicates.

RTC state (board.persist_read/persist_write: RTC memory on the ESP32, which survives deep sleep and
resets but not a power cut): the boot and seq in progress, the board's rtc_ms at boot (uptime across
deep sleeps), the active alarms and the sonar's stuck detector, packed with a CRC-16 so a blank or
garbled RTC memory reads as "no state". A bin continues its boot after a deep-sleep wake only when the
state's boot equals the counter on flash.
"""
import os
import struct

from kerbline.compat import const
from kerbline.wire.crc16 import crc16

# RTC layout ">4sIIqBIH": magic b"KLs1", boot, seq, rtc_ms at boot, alarm bits, sonar last raw, sonar
# repeats (27 bytes), then the CRC-16 of those bytes
_SIZE = const(27)


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def read_boot(path="boot.cnt"):
    """The last boot number (0 when the device never booted); ValueError when the file is unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read(16)
    except OSError:
        return 0
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("%s is unreadable (%r): set it above the last boot the gateway saw" % (path, text))


def next_boot(path="boot.cnt"):
    boot = read_boot(path) + 1
    write_atomic(path, b"%d\n" % boot)
    return boot


class State:
    def __init__(self):
        self.boot = 0
        self.seq = 0
        self.rtc0 = 0
        self.alarms = 0
        self.sonar_last = 0
        self.sonar_same = 0

    def pack(self):
        body = struct.pack(">4sIIqBIH", b"KLs1", self.boot, self.seq, self.rtc0, self.alarms,
                           self.sonar_last, self.sonar_same)
        return body + struct.pack(">H", crc16(body))

    def unpack(self, data):
        """Fill from RTC memory bytes; False (nothing changed) when they are not a valid state."""
        if not data or len(data) < _SIZE + 2 or data[:4] != b"KLs1":
            return False
        body = data[:_SIZE]
        if struct.unpack(">H", data[_SIZE:_SIZE + 2])[0] != crc16(body):
            return False
        (_, self.boot, self.seq, self.rtc0, self.alarms, self.sonar_last,
         self.sonar_same) = struct.unpack(">4sIIqBIH", body)
        return True
