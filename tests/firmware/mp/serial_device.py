"""A device on the serial link for the tests: the real SerialLink, FlashQueue and Downlink on a pty UART,
driven line by line over stdin/stdout (MicroPython; imported precompiled, see the mp_lib fixture).

The UART is `PtyUart` below rather than the sim board's port: importing kerbline.board.sim costs about
9 KB of the 64 KB heap, and after the imports the heap is in pieces barely large enough for the link's
1 KB frame buffer. For the same reason the VM runs without a VFS root (the wrapper costs 4 KB).

main(flash, pty, device, key_hex, boot, max_bytes, ack_ms, backoff_max_ms): `flash` is the folder that
stands for the board's flash (the queue log and the cid file live there).

The link is polled all the time with a clock that moves only on `tick`, so every resend and backoff step
happens at a moment the test chose, while bytes from the pty are read and acted on at once.
stdin commands, one per line:
  report N [alarm]   queue N reports (seq counts up in this boot); prints "QUEUED boot seq" per report
  tick MS            move the clock MS ms on and poll; prints "TICK now"
  stats              prints "STATS {json}": queue, link and downlink counters, in-flight keys, rto
  quit               exit
Events: "TIME t", "CONFIG [(k, v), ...]", "REBOOT", "PING" (then the report it queued), "LOG text".
"""
import gc
import json
import select
import sys
import termios
from binascii import unhexlify

from kerbline.downlink import Downlink
from kerbline.links.serial import SerialLink
from kerbline.store.queue import FlashQueue
from kerbline.wire import report
from kerbline.wire.cose import Sealer


_VTIME = 5  # indexes into the termios control characters (Linux)
_VMIN = 6


def log(text):
    print("LOG " + text)


class PtyUart:
    """The UART the link gets: the pty's slave end in raw mode with VMIN = VTIME = 0, so a read returns
    what has arrived and never waits (a file read of n bytes would otherwise block until all n came)."""

    def __init__(self, path):
        self._f = open(path, "r+b")
        fd = self._f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][_VMIN] = 0
        attrs[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def read(self, n):
        return self._f.read(n) or None

    def write(self, buf):
        return self._f.write(buf)


class Device:
    def __init__(self, flash, pty, device, key_hex, boot, max_bytes, ack_ms, backoff_max_ms):
        uart = PtyUart(pty)
        self.sealer = Sealer(device, unhexlify(key_hex))
        self.boot = boot
        self.seq = 0
        self.now = 0
        self.queue = FlashQueue(flash + "/queue.log", max_bytes)
        self.downlink = Downlink(self.sealer, flash + "/cid", log)
        self.link = SerialLink(uart, self.downlink, self.queue, self,
                               ack_ms, backoff_max_ms, log)

    def add(self, alarm):
        self.seq += 1
        records = [("fill", self.seq), ("alarm", "full")] if alarm else [("fill", self.seq)]
        payload = report.encode(self.boot, self.seq, records, None, self.now)
        self.queue.append(self.sealer.seal(payload), self.boot, self.seq, alarm)
        print("QUEUED %d %d" % (self.boot, self.seq))

    # the application's side of the downlink
    def on_time(self, t):
        print("TIME %d" % t)

    def on_config(self, settings):
        print("CONFIG %s" % sorted(settings.items()))

    def on_reboot(self):
        print("REBOOT")

    def on_ping(self):
        print("PING")
        self.add(False)

    def on_ack(self, boot, seq):  # the serial link applies acks itself; reaching here is a bug
        print("LOG on_ack reached the application")

    def stats(self):
        link = self.link
        q = self.queue
        return {
            "queue": len(q), "bytes": q.bytes_used, "sent": link.sent, "resent": link.resent,
            "acked": link.acked, "rto": link.rto_ms, "flight": ["%d.%d" % k for k in link.in_flight()],
            "link_rejected": link.rejected, "downlink_rejected": self.downlink.rejected,
            "short_writes": link.short_writes, "dropped_routine": q.dropped_routine, "free": gc.mem_free(),
        }

    def command(self, line):
        words = line.split()
        if not words:
            return True
        if words[0] == "report":
            for _ in range(int(words[1])):
                self.add(len(words) > 2)
        elif words[0] == "tick":
            self.now += int(words[1])
            self.link.poll(self.now)
            print("TICK %d" % self.now)
        elif words[0] == "stats":
            print("STATS " + json.dumps(self.stats()))
        elif words[0] == "quit":
            return False
        else:
            print("LOG unknown command " + words[0])
        return True

    def run(self):
        stdin = select.poll()
        stdin.register(sys.stdin, select.POLLIN)
        print("READY")
        while True:
            self.link.poll(self.now)
            if stdin.poll(2):
                line = sys.stdin.readline()
                if not line or not self.command(line):
                    return


def main(flash, pty, device, key_hex, boot, max_bytes, ack_ms, backoff_max_ms):
    Device(flash, pty, device, key_hex, int(boot), int(max_bytes), int(ack_ms), int(backoff_max_ms)).run()
