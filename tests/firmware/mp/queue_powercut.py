"""The flash queue through a power cut at every write step (MicroPython and CPython).

Usage: queue_powercut.py DIR

A fixed scenario (appends of routine and alarm reports, cumulative acks, out-of-order single acks,
appends that compact and drop, acks that empty the queue) runs once without cuts, recording the queue's
content after every operation and the number of write steps (bytes, renames, removes). Then, for every
k from 0 to the total, it runs again on empty flash with the power cut after k steps, reopens the queue
as a reboot would, and checks:
  - the content is exactly the content before or after the interrupted operation (for an append that
    compacted first: also the compacted content without the new report); so no complete record is lost,
    no acked one comes back, nothing is invented, order is kept;
  - len() agrees, bytes_used is the file's size and within max_bytes, no temporary file is left;
  - a second reopen finds nothing torn and the same content (the recovery is itself durable).
For the first torn cut inside each operation of RECOVERY_OPS, the recovery that the reopen runs (it
compacts the torn tail away) is itself cut at every step, and a further reopen must give the same content.

Prints "FAIL ..." lines, then one summary line:
  "cuts N undone U compacted C completed D torn T recovery_cuts R dropped_routine X dropped_alarm Y failures F"
(undone: the content before the interrupted operation; compacted: an append's compaction was done, the
append was not; completed: the run that no cut interrupted).
and exits 1 when F > 0.
"""
import gc
import hashlib
import sys

from queue_fs import CutFlash, PowerCut, read, record, write

from kerbline.store.queue import FlashQueue

MAX = 420
# a first append, an ack-one record, an append after compactions, an append among alarms only
RECOVERY_OPS = (0, 5, 16, 30)


def message(boot, seq, size):
    # every third message carries a complete, valid ack-everything record: a torn copy of it must never
    # be taken for a record
    body = bytearray(size)
    for i in range(size):
        body[i] = (boot * 31 + seq * 7 + i * 13) & 0xFF
    if seq % 3 == 0:
        planted = record(0x02, 0xFFFF, 0xFFFF, b"")
        body[2 : 2 + len(planted)] = planted
    return bytes(body)


def scenario():
    ops = []
    for seq, alarm, size in ((1, 0, 24), (2, 1, 18), (3, 0, 30), (4, 0, 12)):
        ops.append(("add", 1, seq, alarm, size))
    ops.append(("ack", 1, 1))
    ops.append(("one", 1, 3))  # beyond the oldest unacked: an ack-one record
    ops.append(("one", 1, 2))  # the oldest: the watermark moves past 3
    for seq in range(5, 15):  # fills the queue: compactions, then routine reports dropped
        ops.append(("add", 1, seq, 1 if seq % 4 == 0 else 0, 20 + (seq * 5) % 23))
    ops.append(("ack", 1, 9))
    ops.append(("ack", 2, 0))  # everything of boot 1: the log is removed
    for seq in range(1, 13):  # alarms only: the oldest alarms must go
        ops.append(("add", 2, seq, 1, 40))
    ops.append(("one", 2, 11))
    ops.append(("ack", 2, 12))
    return ops


def apply(q, op):
    if op[0] == "add":
        q.append(message(op[1], op[2], op[4]), op[1], op[2], op[3] == 1)
    elif op[0] == "ack":
        q.ack(op[1], op[2])
    else:
        q.ack_one(op[1], op[2])


def summary(entries):
    """(keys as text, SHA-256 of keys and messages): a queue's whole content in a few bytes of RAM."""
    keys = []
    h = hashlib.sha256()
    for boot, seq, alarm, msg in entries:
        key = "%d.%d%s" % (boot, seq, "a" if alarm else "")
        keys.append(key)
        h.update(key.encode())
        h.update(msg)
    return " ".join(keys), h.digest()


def content(q):
    return summary(q.peek(1000))


class Run:
    def __init__(self, folder):
        self.path = folder + "/q.log"
        self.tmp = self.path + ".tmp"
        self.failures = 0

    def fail(self, why):
        self.failures += 1
        if self.failures <= 20:
            print("FAIL " + why)

    def wipe(self):
        write(self.path, None)
        write(self.tmp, None)

    def clean_run(self, ops):
        self.wipe()
        flash = CutFlash(None)
        q = FlashQueue(self.path, MAX, flash)
        states = [content(q)]
        compacted = [None]
        for op in ops:
            apply(q, op)
            entries = q.peek(1000)
            states.append(summary(entries))
            compacted.append(summary(entries[:-1]) if op[0] == "add" else None)
            entries = None
        return states, compacted, flash.steps, q.dropped_routine, q.dropped_alarm

    def cut_run(self, ops, k):
        """Run until the power goes after k steps; the index of the interrupted op (len(ops): none)."""
        self.wipe()
        flash = CutFlash(k)
        try:
            q = FlashQueue(self.path, MAX, flash)
            for i in range(len(ops)):
                apply(q, ops[i])
        except PowerCut:
            return i
        return len(ops)

    def reopen_check(self, where, allowed):
        """Reopen as after a reboot and check every invariant; the queue and its content."""
        q = FlashQueue(self.path, MAX)
        got = content(q)
        if got not in allowed:
            self.fail("%s: content [%s] not one of %r" % (where, got[0], [a[0] for a in allowed]))
        size = read(self.path)
        size = 0 if size is None else len(size)
        if len(q) != len(got[0].split()) or q.bytes_used != size or size > MAX or read(self.tmp) is not None:
            self.fail("%s: len %d/%d bytes_used %d size %d tmp %r" % (where, len(q), len(got[0].split()), q.bytes_used, size, read(self.tmp) is not None))
        again = FlashQueue(self.path, MAX)
        if again.torn or content(again) != got or again.bytes_used != q.bytes_used:
            self.fail("%s: second reopen differs (torn %d)" % (where, again.torn))
        return q, got

    def recovery_cuts(self, where, expected):
        """The log as the cut left it is reopened with the power cut at every step of the recovery."""
        log = read(self.path)
        tmp = read(self.tmp)
        write(self.path, log)
        write(self.tmp, tmp)
        flash = CutFlash(None)
        FlashQueue(self.path, MAX, flash)
        total = flash.steps
        for j in range(total):
            write(self.path, log)
            write(self.tmp, tmp)
            try:
                FlashQueue(self.path, MAX, CutFlash(j))
                self.fail("%s: recovery cut at %d did not cut" % (where, j))
            except PowerCut:
                pass
            self.reopen_check("%s recovery cut %d" % (where, j), [expected])
        write(self.path, log)
        write(self.tmp, tmp)
        return total


def main(folder):
    ops = scenario()
    run = Run(folder)
    states, compacted_states, total, dropped_routine, dropped_alarm = run.clean_run(ops)
    undone = compacted = completed = torn = recovered = 0
    done_recovery = []
    for k in range(total + 1):
        i = run.cut_run(ops, k)
        allowed = [states[i]] if i == len(ops) else [states[i], states[i + 1]]
        if i < len(ops) and compacted_states[i + 1] is not None:
            allowed.append(compacted_states[i + 1])
        log = read(run.path)
        tmp = read(run.tmp)
        q, got = run.reopen_check("cut at step %d (op %d %r)" % (k, i, ops[i] if i < len(ops) else None), allowed)
        if q.torn:
            torn += 1
            if i in RECOVERY_OPS and i not in done_recovery:
                done_recovery.append(i)
                write(run.path, log)
                write(run.tmp, tmp)
                recovered += run.recovery_cuts("op %d cut %d" % (i, k), got)
        if i == len(ops):
            completed += 1
        elif got == states[i]:
            undone += 1
        else:
            compacted += 1
        q = None
        gc.collect()
    print("cuts %d undone %d compacted %d completed %d torn %d recovery_cuts %d dropped_routine %d dropped_alarm %d failures %d"
          % (total + 1, undone, compacted, completed, torn, recovered, dropped_routine, dropped_alarm, run.failures))
    sys.exit(1 if run.failures else 0)


if __name__ == "__main__":
    main(sys.argv[1])
