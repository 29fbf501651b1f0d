"""Where the cumulative serial `ack` may point: past every report the device has sent, and only once
each of them is committed.

`ack {boot, seq}` tells the device that every report up to (boot, seq), earlier boots included, is
stored, and it drops them from its flash. Acking the highest committed report would be wrong: a report
corrupted on the wire just before it would be dropped by the device and lost. Acking only a gap-free
run of seqs would be wrong too: a device whose queue overflowed has thinned routine reports away, and
the gap they leave never fills, so the device would never be acked again.

What the device's serial link guarantees (firmware kerbline/links/serial.py) is the order of its
frames: its window is always the oldest unacknowledged reports of its queue; it sends new ones in
queue order, and a resend round sends the whole window again, oldest first. So, on one port:
- a frame whose key (boot, seq) is at or below the previous frame's starts a round: it is the
  device's oldest unacked report, and everything below it is acked or gone from the device;
- a frame whose key is above the previous one follows it in the device's queue: nothing the device
  still holds lies between them;
provided nothing was lost on the wire in between. A frame that fails COBS or CRC (noise, a torn write,
a boot banner) is such a loss, and so is reconnecting the port (whatever was sent meanwhile is gone):
after it, frames are "untrusted" until the next round starts. A frame with a good CRC that is refused
(bad tag, bad report) was sent as it is and is not a loss: the ack may pass over it, which drops a
report no gateway would ever accept from the device's queue.

A trusted run lets the ack advance to each of its reports as soon as that report, and every report
before it in the run, is committed (DUPLICATE counts: it is durable). A report the spool refused
breaks its run: nothing after it in that run is acked, so the device sends it again. A frame at or
below the current ack (a resend: the device missed an ack) asks for the ack to be sent again.

After a reconnect the first frames are untrusted, so the first ack comes after the device's first
resend round (its ack timeout, 2 s by default). Bound: the pending list holds the frames received and
not yet committed (at most the spool's backpressure allows; the device sends at most 4 at a time).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

Key = tuple[int, int]  # (boot, seq)

PENDING, DURABLE, FAILED = 0, 1, 2
_runs = itertools.count(1)


@dataclass(slots=True)
class Entry:
    key: Key | None  # None: a frame with a good CRC that was refused (its key cannot be trusted)
    trusted: bool
    run: int
    state: int = PENDING


class AckPoint:
    """One device's ack position on one port (see the module docstring)."""

    def __init__(self) -> None:
        self.acked: Key | None = None
        self._prev: Key | None = None
        self._clean = False  # nothing lost on the wire since the previous frame
        self._run = 0
        self._run_trusted = False
        self._broken: set[int] = set()
        self._pending: deque[Entry] = deque()
        self.want_ack = False

    def loss(self) -> None:
        """Bytes were lost on the port (framing error, reconnect): the run in progress ends here."""
        self._clean = False

    def frame(self, key: Key | None) -> Entry:
        """A frame from this device, in stream order; the returned entry is settled later."""
        if key is None:
            entry = Entry(None, self._run_trusted and self._clean, self._run)
        else:
            if self._prev is not None and self._clean and key > self._prev:
                pass  # the next report in the device's queue: same run
            else:
                self._run = next(_runs)
                self._run_trusted = self._prev is not None and self._clean  # a round restart
            self._prev = key
            entry = Entry(key, self._run_trusted, self._run)
        self._clean = True
        self._pending.append(entry)
        return entry

    def settle(self, entry: Entry, durable: bool) -> None:
        """The spool's answer for `entry`: committed (or duplicate), or not stored."""
        entry.state = DURABLE if durable else FAILED
        if not durable:
            self._broken.add(entry.run)
            if entry.run == self._run:
                self._run_trusted = False  # later frames of this run may not be acked either
        pending = self._pending
        while pending and pending[0].state != PENDING:
            done = pending.popleft()
            key = done.key
            if key is None or done.state != DURABLE:
                continue
            if self.acked is not None and key <= self.acked:
                self.want_ack = True  # a resend of something acked: the device missed the ack
            elif done.trusted and done.run not in self._broken:
                self.acked = key
                self.want_ack = True
        if not pending:
            self._broken.clear()

    def take_ack(self) -> Key | None:
        """The ack to send now, if one is due."""
        if not self.want_ack or self.acked is None:
            return None
        self.want_ack = False
        return self.acked
