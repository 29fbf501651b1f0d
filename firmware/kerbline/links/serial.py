"""The serial link, device side: queued reports out as COBS+CRC frames, commands in, driven by `poll(now)`.

Out: the oldest unacked reports of the flash queue, at most `WINDOW` (4) in flight. When the oldest
report in flight has waited `rto_ms` without an ack, every report in flight goes again, oldest first,
and the wait doubles for the next round (`ack_ms`, 2x, 4x, ... up to `backoff_max_ms`). An ack that acks
something brings the wait back to `ack_ms`; so does a `time` command (the gateway sends one when it
(re)connects), after which every report in flight goes again at once. A
report stays in the flash queue until a cumulative `ack` covers it, so a reboot or a lost line loses
nothing: the queue is sent again from its oldest report, and the gateway drops what it already has.

In: bytes are read without blocking (at most `_READS` reads of `_CHUNK` bytes per poll, so garbage
cannot hold the main loop) into the frame decoder's one fixed buffer. Each frame goes through the
`Downlink` (tag, kid, shape, replay); `ack` is applied here, every other op goes to the application's
handler (`ping`: the application queues a report, which this link then sends).

Counters: `rejected` (reason -> count: framing reasons from the decoder and command reasons from the
downlink, for this link), `sent`, `resent`, `acked` (reports), `short_writes` (the UART took less than a
whole frame; the receiver drops the torn frame and the resend repairs it). `rto_ms` is the current wait.

One link owns a queue: the MQTT link acks with `ack_one`, this one with the cumulative `ack`.
"""
from kerbline.compat import const
from kerbline.downlink import count
from kerbline.wire import command, frame
from kerbline.wire.reject import Reject

try:
    from time import ticks_diff
except ImportError:  # CPython: plain monotonic milliseconds, no wrap-around

    def ticks_diff(a, b):
        return a - b


WINDOW = const(4)
_READS = const(4)
_CHUNK = const(128)
_MAX_LEVEL = const(10)


class SerialLink:
    def __init__(self, uart, downlink, queue, handler, ack_ms=2000, backoff_max_ms=60000, log=print):
        self.uart = uart
        self.downlink = downlink
        self.queue = queue
        self.handler = handler
        self.ack_ms = ack_ms
        self._max_ms = backoff_max_ms
        self.log = log
        self._deframer = frame.Deframer(self._on_message, self._on_reject)
        self._flight = []  # [boot, seq, sent_at], oldest first
        self._level = 0  # resend rounds since the last progress
        self._all_due = False
        self.rejected = {}
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.short_writes = 0

    @property
    def rto_ms(self):
        return min(self.ack_ms << self._level, self._max_ms)

    def in_flight(self):
        """(boot, seq) of the reports sent and not yet acked, oldest first."""
        return [(f[0], f[1]) for f in self._flight]

    def poll(self, now):
        """Read what has arrived, act on it, send and resend; returns at once."""
        for _ in range(_READS):
            data = self.uart.read(_CHUNK)
            if not data:
                break
            self._deframer.feed(data)
        self._pump(now)

    # ------------------------------------------------------------ out

    def _pump(self, now):
        flight = self._flight
        # a resend round: the oldest report in flight waited `rto_ms` (or the gateway just reconnected)
        resend = bool(flight) and (self._all_due or ticks_diff(now, flight[0][2]) >= self.rto_ms)
        if not resend and not (len(flight) < WINDOW and len(self.queue) > len(flight)):
            return
        kept = []
        window = self.queue.peek(WINDOW)
        for boot, seq, _alarm, message in window:
            entry = None
            for f in flight:
                if f[0] == boot and f[1] == seq:
                    entry = f
                    break
            if entry is None:
                self._send(message)
                self.sent += 1
                kept.append([boot, seq, now])
            else:
                if resend:
                    self._send(message)
                    self.resent += 1
                    entry[2] = now
                kept.append(entry)
        if resend:
            # the round once more, straight after: its first frame then follows the last one with no
            # gap for line noise to fall into, so the gateway can trust it as the start of a round
            # (noise between rounds makes it distrust a lone round; docs/firmware.md, serial link)
            for entry in window:
                self._send(entry[3])
                self.resent += 1
        # a report no longer in the queue (dropped when it was full) leaves the window here
        self._flight = kept
        if resend and not self._all_due and self._level < _MAX_LEVEL:
            self._level += 1
        self._all_due = False

    def _send(self, message):
        data = frame.encode(message)
        n = self.uart.write(data)
        if n is not None and n < len(data):
            self.short_writes += 1

    # ------------------------------------------------------------ in

    def _on_reject(self, reason):
        count(self.rejected, reason, self.log, "serial")

    def _on_message(self, message):
        try:
            op, args = self.downlink.accept(message)
        except Reject as e:
            count(self.rejected, e.reason, None, "serial")  # the downlink has logged it
            return
        if op == "ack":
            self._ack(args[command.A_BOOT], args[command.A_SEQ])
            return
        if op == "time":  # the gateway has (re)connected: no reason to wait any longer
            self._level = 0
            self._all_due = bool(self._flight)
        self.downlink.dispatch(op, args, self.handler)

    def _ack(self, boot, seq):
        n = self.queue.ack(boot, seq)
        kept = []
        for f in self._flight:
            if f[0] > boot or (f[0] == boot and f[1] > seq):
                kept.append(f)
        self._flight = kept
        if n:
            self.acked += n
            self._level = 0
