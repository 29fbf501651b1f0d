"""Crashes on flash: why the device last fell over, and how many times in a row.

`record(reason)` adds one line to /crash.log and one to the count in /crash.cnt (temp file + rename).
The log is bounded: past LOG_MAX bytes its older half is dropped (the newest crashes say most). The
count is of crashes with no healthy run in between: a bin's cycle that reaches deep sleep, or a light
that has run `healthy_s`, calls `healthy()`, which sets it back to 0. So "N crashes in a short time"
is measured in running time, which needs no clock: a device whose clock was never set still counts.
A watchdog reset counts as a crash (main.py records it at the next boot).
"""
import sys

from kerbline.persist import write_atomic

LOG_PATH = "crash.log"
COUNT_PATH = "crash.cnt"
LOG_MAX = 2048


def count(path=COUNT_PATH):
    try:
        with open(path, "rb") as f:
            return int(f.read(16).strip())
    except (OSError, ValueError):
        return 0


def describe(exc):
    """One line for the log: the exception and where it happened, without the traceback's bulk."""
    try:
        from io import StringIO

        buf = StringIO()
        if hasattr(sys, "print_exception"):
            sys.print_exception(exc, buf)
        else:  # CPython
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__, file=buf)
        lines = [line.strip() for line in buf.getvalue().split("\n") if line.strip()]
        where = lines[-2] if len(lines) >= 2 else ""
        return "%s (%s)" % (lines[-1] if lines else repr(exc), where)
    except Exception:
        return repr(exc)


def record(reason, boot=0, log_path=LOG_PATH, count_path=COUNT_PATH):
    """Log a crash and count it; returns the new count. Never raises (it runs while failing)."""
    n = count(count_path) + 1
    try:
        write_atomic(count_path, b"%d\n" % n)
        line = ("boot %d crash %d: %s\n" % (boot, n, reason))[:200]
        try:
            with open(log_path, "rb") as f:
                old = f.read()
        except OSError:
            old = b""
        if len(old) + len(line) > LOG_MAX:
            old = old[len(old) // 2:]
            old = old[old.find(b"\n") + 1:]
        write_atomic(log_path, old + line.encode())
    except Exception as e:  # a full or broken flash: say so on the console, keep going to the reset
        print("crashlog: cannot write:", e)
    return n


def healthy(count_path=COUNT_PATH):
    """A healthy run: the crashes before it no longer count towards safe mode."""
    if count(count_path):
        write_atomic(count_path, b"0\n")


def last(log_path=LOG_PATH):
    """The newest crash line, or None."""
    try:
        with open(log_path) as f:
            lines = f.read().strip().split("\n")
    except OSError:
        return None
    return lines[-1] if lines and lines[-1] else None
