"""Commands from the gateway, whatever link brought them: verified, never replayed, then acted on.

A command acts only after three checks, in the contract's order: the COSE envelope and its tag under
this device's key with kid = this device (`Sealer.open`), the command's shape (`command.parse`), and a
cid above the last one applied (`replay`). cids increase per device, so one number is the whole replay
state. It is written to flash (`state_path`, temp file + rename, so a power cut leaves the old or the
new value) before the command acts, so a reboot, even one the command itself asked for, cannot reopen a
replay. `ack` cids are the exception: they are checked against the number in RAM but not written,
because a replayed ack changes nothing (acks are cumulative and idempotent) and the serial link gets one
per report, which would double the flash writes; the next other command writes the highest cid seen.

The application handles the ops through an object with these methods:
  on_ack(boot, seq)   on_time(unix_seconds)   on_config(settings: dict)   on_reboot()   on_ping()
(the serial link handles `ack` itself, see kerbline.links.serial).

A refused command is counted by reason in `rejected` and logged; the log is rate-limited to the 1st,
2nd, 4th, 8th, ... of each reason, so a flood of forgeries cannot flood the console. A failure to write
the cid (a flash error, OSError) propagates and the command is not applied.
"""
import os

from kerbline.compat import const
from kerbline.wire import command
from kerbline.wire.reject import REPLAY, TOO_LARGE, Reject

MAX_MESSAGE = const(1024)  # the contract's message limit


def count(counts, reason, log, where):
    """Add one to `counts[reason]` and log it when the count is a power of two."""
    n = counts.get(reason, 0) + 1
    counts[reason] = n
    if log is not None and not n & (n - 1):
        log("%s: refused %s (%d so far)" % (where, reason, n))


def _read_cid(path, log):
    try:
        with open(path, "rb") as f:
            text = f.read(16)
    except OSError:
        return -1  # never written: nothing applied yet
    try:
        return int(text.strip())
    except ValueError:
        if log is not None:
            log("downlink: %s unreadable, replay guard starts over" % path)
        return -1


class Downlink:
    """The device's command gate, shared by the serial and MQTT links."""

    def __init__(self, sealer, state_path, log=print):
        self.sealer = sealer
        self._path = state_path
        self.log = log
        self.last_cid = _read_cid(state_path, log)  # highest cid applied (-1: none)
        self.rejected = {}
        self.applied = 0

    def accept(self, message):
        """(op, args) of a genuine command not applied before, with its cid recorded; else Reject."""
        try:
            if len(message) > MAX_MESSAGE:
                raise Reject(TOO_LARGE)
            cid, op, args = command.parse(self.sealer.open(message))
            if cid <= self.last_cid:
                raise Reject(REPLAY)
        except Reject as e:
            count(self.rejected, e.reason, self.log, "downlink")
            raise
        if op != "ack":
            self._save(cid)
        self.last_cid = cid
        self.applied += 1
        return op, args

    def dispatch(self, op, args, handler):
        """Call the handler's method for `op` (args as `command.parse` returned them)."""
        if op == "ack":
            handler.on_ack(args[command.A_BOOT], args[command.A_SEQ])
        elif op == "time":
            handler.on_time(args[command.A_TIME])
        elif op == "config":
            handler.on_config(args)
        elif op == "reboot":
            handler.on_reboot()
        else:
            handler.on_ping()

    def handle(self, message, handler):
        """Accept and dispatch one message; the op, or None when it was refused (counted, logged)."""
        try:
            op, args = self.accept(message)
        except Reject:
            return None
        self.dispatch(op, args, handler)
        return op

    def _save(self, cid):
        tmp = self._path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"%d\n" % cid)
        os.rename(tmp, self._path)
