"""The flash queue: sealed reports wait here, in order, until the gateway has them (an ack).

Why a log: flash file systems (littlefs on the ESP32) copy a block to change a byte in the middle of a
file, and a power cut can only tear what was being written last. So the queue is one append-only file of
records, and an ack is itself a small record appended after the reports it covers. Nothing is ever
rewritten in place; space is reclaimed by compaction, which streams the live records into a temporary
file and renames it over the log (atomic on littlefs and POSIX): a cut leaves the old log or the new one.

Record: 14-byte header, big-endian, then the message.
    magic 0x4B | flags | length u16 | boot u32 | seq u32 | crc16 (over the first 12 header bytes + message)
flags: bit 0 alarm; bits 1-2 kind: 0 report, 1 ack-up-to (boot, seq) cumulative, 2 ack-one (boot, seq);
other bits zero. An ack record has no message.

Acked state in RAM: a watermark W (every report with key (boot, seq) <= W is acked; the contract's
cumulative `ack`) and a short list of reports acked out of order beyond the oldest unacked one (MQTT
PUBACKs), at most `MAX_ONE`; more are refused (`ack_overflow`) and simply sent again later. When an ack
reaches the oldest unacked report the watermark moves past every acked report that follows, so the list
stays short. Reports are appended in (boot, seq) order, which the device's boot counter and per-boot
sequence guarantee; the watermark relies on that.

Opening walks the headers (payloads are skipped) and checks the CRC of every ack record, of the last
record (the only one a power cut can tear) and of every record after damage. A record cut off by the
end of the file, or a last record whose CRC fails, is a torn tail: the walk ends there (nothing after it
can be a record, so no stray bytes inside it are ever taken for one). A header that is not a header in
the middle of the log is damage (flash, not a power cut): the walk skips to the next magic byte that
starts a sound record. Either is counted in `torn` and the log is compacted at once, so it is gone from
flash; a complete record is never lost to a torn one. A bit flipped inside an older message by the
flash itself is not looked for here: the gateway's MAC check refuses that message (`bad_tag`).

Bound: the log never exceeds `max_bytes`. An append that would pass it compacts first; if the live
reports alone still leave no room, the oldest routine reports are dropped, an eighth of `max_bytes`
beyond what is needed, so a long outage does not rewrite the whole log at every new report; alarms are
kept. Only when alarms alone fill the queue is the oldest alarm dropped (`dropped_alarm`), just enough
for the new one: the newest alarm says more about the street now than the oldest. When the last report
is acked the log file is removed, so an idle queue costs no flash and opening it reads nothing.

RAM: a 14-byte header buffer and a 128-byte copy buffer; no step reads the whole file. Counters since
boot (in RAM): `dropped_routine`, `dropped_alarm`, `torn` (damaged stretches recovered), `ack_overflow`.
"""
import os
import struct

from kerbline.compat import const
from kerbline.wire.crc16 import crc16

MAX_MESSAGE = const(1024)
MAX_ONE = const(8)
HEADER = const(14)
_F_ALARM = const(0x01)
_K_REPORT = const(0x00)
_K_UPTO = const(0x02)
_K_ONE = const(0x04)
_KIND = const(0x06)
_RESERVED = const(0xF8)
_MAGIC = const(0x4B)
_CRC_AT = const(12)
_CHUNK = const(128)
_FORMAT = ">BBHII"
_TORN = const(0)
_DAMAGED = const(1)


class Flash:
    """The file operations the queue needs, on the real file system; tests pass one that cuts power."""

    def open(self, path, mode):
        return open(path, mode)

    def rename(self, old, new):
        os.rename(old, new)

    def remove(self, path):
        os.remove(path)

    def size(self, path):
        """Size in bytes, or -1 when there is no such file."""
        try:
            return os.stat(path)[6]
        except OSError:
            return -1


def _gt(b1, s1, b2, s2):
    return b1 > b2 or (b1 == b2 and s1 > s2)


class FlashQueue:
    """Reports waiting for an ack, oldest first, in a log file of at most `max_bytes` bytes."""

    def __init__(self, path, max_bytes, fs=None):
        if max_bytes < 2 * HEADER + 2:
            raise ValueError("max_bytes too small")
        self.path = path
        self._tmp = path + ".tmp"
        self.max_bytes = max_bytes
        self.fs = fs or Flash()
        self._hdr = bytearray(HEADER)
        self._buf = bytearray(_CHUNK)
        self.dropped_routine = 0
        self.dropped_alarm = 0
        self.torn = 0
        self.ack_overflow = 0
        self._bad = 0  # damaged stretches met by the current walk
        self._load()

    def __len__(self):
        return self.count

    # ------------------------------------------------------------ public operations

    def append(self, message, boot, seq, is_alarm):
        """Store one sealed report durably (returns once it is on flash)."""
        length = len(message)
        size = HEADER + length
        if not 0 < length <= MAX_MESSAGE or size > self.max_bytes:
            raise ValueError("message does not fit the queue")
        if self.bytes_used + size > self.max_bytes:
            self._compact(size)
        self._seal_header(_F_ALARM if is_alarm else _K_REPORT, length, boot, seq, message)
        self._write(self._hdr, message)
        if not self.count:
            self.head = self.bytes_used
        self.bytes_used += size
        self.count += 1

    def peek(self, n):
        """Up to `n` oldest unacked reports as (boot, seq, is_alarm, message), oldest first."""
        out = []
        if not self.count or n <= 0:
            return out
        with self.fs.open(self.path, "rb") as f:
            for p, flags, length, b, s in self._records(f, self.head, self.bytes_used):
                if flags & _KIND == _K_REPORT and not self._acked(b, s):
                    f.seek(p + HEADER)
                    out.append((b, s, bool(flags & _F_ALARM), f.read(length)))
                    if len(out) >= n:
                        break
        return out

    def ack(self, boot, seq):
        """Cumulative ack: drop every report of earlier boots and of `boot` up to `seq`. Returns how many."""
        if not _gt(boot, seq, self._wb, self._ws):
            return 0
        n = 0
        head = self.bytes_used
        upto_b = boot
        upto_s = seq
        if self.count:
            with self.fs.open(self.path, "rb") as f:
                for p, flags, length, b, s in self._records(f, self.head, self.bytes_used):
                    if flags & _KIND != _K_REPORT:
                        continue
                    if not _gt(b, s, boot, seq):
                        if not self._in_one(b, s):
                            n += 1
                    elif self._in_one(b, s):
                        upto_b = b
                        upto_s = s
                    else:
                        head = p
                        break
        self._settle(_K_UPTO, upto_b, upto_s, head, n)
        return n

    def ack_one(self, boot, seq):
        """Ack the single report (boot, seq) (an MQTT PUBACK). Returns False if it is not waiting here."""
        if not self.count or self._acked(boot, seq):
            return False
        at_head = True  # every report before the one being looked at is acked
        found = False
        head = self.bytes_used
        upto_b = boot
        upto_s = seq
        with self.fs.open(self.path, "rb") as f:
            for p, flags, length, b, s in self._records(f, self.head, self.bytes_used):
                if flags & _KIND != _K_REPORT:
                    continue
                if self._in_one(b, s):
                    if found:
                        upto_b = b
                        upto_s = s
                    continue
                if found:
                    head = p
                    break
                if b == boot and s == seq:
                    found = True
                    if not at_head:
                        break
                    continue
                if _gt(b, s, boot, seq):
                    break
                at_head = False
        if not found:
            return False
        if at_head:
            self._settle(_K_UPTO, upto_b, upto_s, head, 1)
        elif len(self._one) >= MAX_ONE:
            self.ack_overflow += 1
            return False
        else:
            self._settle(_K_ONE, boot, seq, self.head, 1)
        return True

    # ------------------------------------------------------------ acked state

    def _in_one(self, b, s):
        return bool(self._one) and (b, s) in self._one

    def _acked(self, b, s):
        return not _gt(b, s, self._wb, self._ws) or self._in_one(b, s)

    def _raise_watermark(self, b, s):
        if _gt(b, s, self._wb, self._ws):
            self._wb = b
            self._ws = s
            kept = []
            for key in self._one:
                if _gt(key[0], key[1], b, s):
                    kept.append(key)
            self._one = kept

    def _settle(self, kind, b, s, head, n):
        """Make an ack that acks `n` more reports and moves the oldest unacked one to `head` durable.

        An ack that acks nothing new writes nothing; one that acks the last report removes the log."""
        if not n:
            return
        if n >= self.count:
            self.fs.remove(self.path)  # one atomic step, and an idle queue holds no flash
            self._empty()
            return
        room = self.bytes_used + HEADER <= self.max_bytes
        if room:
            self._seal_header(kind, 0, b, s, None)
            self._write(self._hdr, None)
            self.bytes_used += HEADER
        if kind == _K_UPTO:
            self._raise_watermark(b, s)
        else:
            self._one.append((b, s))
        self.count -= n
        self.head = head
        if not room:
            self._compact(0)  # no room for the ack record: drop the acked reports instead

    def _empty(self):
        self._one = []
        self.count = 0
        self.head = 0
        self.bytes_used = 0

    # ------------------------------------------------------------ records on flash

    def _seal_header(self, flags, length, boot, seq, message):
        h = self._hdr
        struct.pack_into(_FORMAT, h, 0, _MAGIC, flags, length, boot, seq)
        crc = crc16(memoryview(h)[:_CRC_AT])
        if message:
            crc = crc16(message, crc)
        struct.pack_into(">H", h, _CRC_AT, crc)

    def _write(self, header, message):
        try:
            with self.fs.open(self.path, "ab") as f:
                f.write(header)
                if message:
                    f.write(message)
        except OSError:
            # the log may now end in a torn record: read it again as at boot, then report the failure
            self._load()
            raise

    def _valid_at(self, f, p, end, check):
        """The header fields (flags, length, boot, seq) of a sound record at `p`; else _TORN when the
        bytes from `p` are the start of a record cut off by the end of the log (what a power cut leaves:
        nothing after it can be a record), or _DAMAGED when they are not a record at all."""
        if end - p < HEADER:
            return _TORN
        h = self._hdr
        f.seek(p)
        if f.readinto(h) != HEADER:
            return _TORN
        magic, flags, length, boot, seq = struct.unpack_from(_FORMAT, h, 0)
        if magic != _MAGIC or flags & _RESERVED:
            return _DAMAGED
        kind = flags & _KIND
        if kind == _K_REPORT:
            if not 0 < length <= MAX_MESSAGE:
                return _DAMAGED
        elif kind == _KIND or length or flags & _F_ALARM:
            return _DAMAGED
        stop = p + HEADER + length
        if stop > end:
            return _TORN
        if check or not length or stop == end:
            crc = crc16(memoryview(h)[:_CRC_AT])
            want = struct.unpack_from(">H", h, _CRC_AT)[0]
            mv = memoryview(self._buf)
            left = length
            while left:
                k = min(left, _CHUNK)
                if f.readinto(mv[:k]) != k:
                    return _TORN
                crc = crc16(mv[:k], crc)
                left -= k
            if crc != want:
                return _TORN if stop == end else _DAMAGED
        return flags, length, boot, seq

    def _records(self, f, p, end):
        """Yield (offset, flags, length, boot, seq) of each sound record from `p`.

        A torn tail ends the walk; damage is skipped byte by byte up to the next sound record (rare, so
        slow is fine). Each torn tail or damaged stretch adds one to `_bad`."""
        check = False
        sound = True
        while p < end:
            fields = self._valid_at(f, p, end, check)
            if fields == _TORN or fields == _DAMAGED:
                if sound:
                    self._bad += 1
                    sound = False
                if fields == _TORN:
                    return
                check = True  # after damage, believe no header without its CRC
                p += 1
                continue
            sound = True
            flags, length, boot, seq = fields
            yield p, flags, length, boot, seq
            p += HEADER + length

    # ------------------------------------------------------------ opening and compaction

    def _load(self):
        """Rebuild the RAM state from flash, finishing or discarding an interrupted compaction."""
        fs = self.fs
        self._empty()
        self._wb = 0  # watermark: every report <= (_wb, _ws) is acked
        self._ws = 0
        size = fs.size(self.path)
        tmp_size = fs.size(self._tmp)
        if size < 0:
            if tmp_size < 0:
                return
            # the old log was removed only after the new one was complete: finish the rename
            fs.rename(self._tmp, self.path)
            size = tmp_size
        elif tmp_size >= 0:
            fs.remove(self._tmp)  # a compaction cut short; the old log is whole
        self.bytes_used = size
        self._bad = 0
        with fs.open(self.path, "rb") as f:
            for p, flags, length, b, s in self._records(f, 0, size):
                kind = flags & _KIND
                if kind == _K_UPTO:
                    self._raise_watermark(b, s)
                elif kind == _K_ONE and not self._acked(b, s) and len(self._one) < MAX_ONE:
                    self._one.append((b, s))
        if self._bad:
            self.torn += self._bad
            self._compact(0)
            return
        count = 0
        head = size
        with fs.open(self.path, "rb") as f:
            for p, flags, length, b, s in self._records(f, 0, size):
                if flags & _KIND == _K_REPORT and not self._acked(b, s):
                    if not count:
                        head = p
                    count += 1
        self.count = count
        self.head = head

    def _plan(self, need):
        """How many of the oldest routine and alarm reports to drop to leave `need` bytes free."""
        live = 0
        with self.fs.open(self.path, "rb") as f:
            for p, flags, length, b, s in self._records(f, 0, self.bytes_used):
                if flags & _KIND == _K_REPORT and not self._acked(b, s):
                    live += HEADER + length
            strict = live + need - self.max_bytes
            if strict <= 0:
                return 0, 0
            freed = 0
            drops = [0, 0]
            for alarm in (0, 1):
                target = strict if alarm else strict + (self.max_bytes >> 3)
                for p, flags, length, b, s in self._records(f, 0, self.bytes_used):
                    if freed >= target:
                        break
                    if flags & _KIND == _K_REPORT and flags & _F_ALARM == alarm and not self._acked(b, s):
                        freed += HEADER + length
                        drops[alarm] += 1
                if freed >= strict:
                    break
        return drops[0], drops[1]

    def _compact(self, need):
        """Rewrite the log with only the unacked reports, leaving room for `need` more bytes."""
        fs = self.fs
        drop_routine, drop_alarm = self._plan(need) if need else (0, 0)
        kept = 0
        size = 0
        skip_routine = drop_routine
        skip_alarm = drop_alarm
        mv = memoryview(self._buf)
        with fs.open(self.path, "rb") as src:
            with fs.open(self._tmp, "wb") as dst:
                for p, flags, length, b, s in self._records(src, 0, self.bytes_used):
                    if flags & _KIND != _K_REPORT or self._acked(b, s):
                        continue
                    if flags & _F_ALARM:
                        if skip_alarm:
                            skip_alarm -= 1
                            continue
                    elif skip_routine:
                        skip_routine -= 1
                        continue
                    left = HEADER + length
                    src.seek(p)
                    while left:
                        k = min(left, _CHUNK)
                        if src.readinto(mv[:k]) != k:
                            raise OSError(5)  # EIO: the log shrank under us
                        dst.write(mv[:k])
                        left -= k
                    kept += 1
                    size += HEADER + length
        try:
            fs.rename(self._tmp, self.path)
        except OSError:  # a file system whose rename does not replace (FAT): _load finishes this
            fs.remove(self.path)
            fs.rename(self._tmp, self.path)
        self.dropped_routine += drop_routine
        self.dropped_alarm += drop_alarm
        self._one = []
        self.count = kept
        self.head = 0
        self.bytes_used = size
