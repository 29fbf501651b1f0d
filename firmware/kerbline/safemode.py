"""Safe mode: the application does not run, the REPL stays free, and the device says why.

Entered by main.py when /config.json is missing or invalid, or after `crash_n` crashes with no healthy
run between them. It prints the reason on the console (the REPL's UART), keeps it in /safemode.txt for
the technician's tools, and, when the config is good enough to know the device's identity and link,
queues one report with an `alarm`/`sensor_fault` record and a `fault` text record (the reason, at most
64 bytes) and gives the link SEND_S seconds to deliver it. Then main.py returns and the board sits at
the REPL; no watchdog is running (it starts only in the cycles), so nothing resets it.

Leaving: fix the cause (e.g. copy a good config.json with mpremote), then `import kerbline.safemode as s;
s.clear()` and reset the board.
"""
from kerbline import crashlog

MARK_PATH = "safemode.txt"
SEND_S = 20


def enter(reason, cfg=None, board=None, log=print):
    log("*" * 60)
    log("KERBLINE SAFE MODE: " + reason)
    log("The application is stopped; the REPL is free. After fixing the cause:")
    log("  import kerbline.safemode as s; s.clear()   then reset the board")
    log("*" * 60)
    try:
        with open(MARK_PATH, "w") as f:
            f.write(reason + "\n")
    except OSError as e:
        log("safe mode: cannot write %s: %r" % (MARK_PATH, e))
    if cfg is not None and board is not None:
        try:
            _report(reason, cfg, board, log)
        except Exception as e:  # the stack that crashed may fail here too: the console has said it
            log("safe mode: fault not reported: %s" % crashlog.describe(e))


def _report(reason, cfg, board, log):
    from kerbline.app import App
    from kerbline.config import take_key

    app = App(board, cfg, take_key(cfg), log=log)
    app.send([("alarm", "sensor_fault"), ("fault", reason[:64])], True)
    start = board.ticks_ms()
    while len(app.queue) and board.ticks_diff(board.ticks_ms(), start) < SEND_S * 1000:
        app.poll_link()
        board.sleep_ms(50)
    log("safe mode: fault report %s" % ("delivered" if not len(app.queue) else "queued (no ack yet)"))


def clear():
    """Forget the crashes and the safe-mode mark; the next boot runs the application again."""
    import os

    for path in (crashlog.COUNT_PATH, MARK_PATH):
        try:
            os.remove(path)
        except OSError:
            pass
