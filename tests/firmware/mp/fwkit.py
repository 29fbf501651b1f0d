"""Test kit for the firmware tests under MicroPython (compiled with the other test programs, see mp_lib).

- `config(kind, **settings)`: a valid raw config (a fake test key from tests/vectors/devices.json)
- `cfg_for(kind, **settings)`: the same, checked and filled in by the firmware's own `config.check`
- `run_scenario(scenarios, name)`: wipe the device state off the flash, run `scenario_<name>`
- `run_cases(cases, folder, file_cases)`: run case functions, print "ok NAME" / "FAIL NAME: why", exit 1
  if any failed
- `Tap`: the in-test stand-in for a link (kerbline.links.*): once reports are waiting it hands its
  `commands` to the app as the Downlink would (("on_ping",), ("on_time", t), ...), then takes each report
  from the real flash queue as a link would, prints it as "R <alarm 0|1> <COSE message hex>" for the pytest side (which checks it
  with the gateway's own decoder) and acks it; `fail` makes poll raise (a dead line).
- `make_app(board, raw)`: provisions /config.json with `raw` and makes the App on a scripted board, with
  the real FlashQueue and a Tap.
"""
import gc
import sys

DEVICE = {"bin": "bin-0042", "light": "lamp-0117"}
KEYS = {
    "bin-0042": "cd128f3348a040664141d96140729e1b738956419d7b367d4294e99e7e79b1eb",
    "lamp-0117": "2679c1e7ff7de74fcf9f630f5a2ce9fc3d4153b270329e4c5e6c476a48467066",
}
PINS = {
    "bin": {"trig": 5, "echo": 18, "temp": 4, "batt": 34, "tilt": 27, "lid": 26},
    "light": {"scl": 22, "sda": 21, "ldr": 35, "relay": 25, "pwm": 26, "volt": 32, "curr": 33},
}


def config(kind, **settings):
    device = DEVICE[kind]
    cfg = {"id": device, "kind": kind, "key": KEYS[device], "link": {"type": "serial"},
           "pins": dict(PINS[kind])}
    cfg.update(settings)
    return cfg


def cfg_for(kind, **settings):
    from kerbline import config as firmware_config  # imported here: not every test program needs it

    return firmware_config.check(config(kind, **settings))


def run_scenario(scenarios, name):
    """On a fresh flash (the VM's root), run `scenario_<name>` from the module globals `scenarios`."""
    import os

    for entry in os.listdir("/"):
        if entry.endswith((".cnt", ".log", ".json", ".tmp")) or entry == "cid":
            os.remove("/" + entry)
    scenarios["scenario_" + name]()


def run_cases(cases, folder, file_cases=()):
    failed = 0
    for case in cases:
        try:
            if case in file_cases:
                case(folder)
            else:
                case()
            print("ok " + case.__name__)
        except Exception as e:  # a crash is that case's failure, reported, not a dead run
            failed += 1
            print("FAIL %s: %s %r" % (case.__name__, type(e).__name__, e.args))
        gc.collect()
    sys.exit(1 if failed else 0)


class Tap:
    def __init__(self, queue, ack=True):
        self.queue = queue
        self.ack = ack
        self.polls = 0
        self.fail = None  # an exception instance to raise from poll (a dead link)
        self.commands = []
        self.handler = None

    def poll(self, now):
        from binascii import hexlify

        self.polls += 1
        if self.fail is not None:
            raise self.fail
        reports = self.queue.peek(4) if self.ack else ()
        if reports:  # the device has spoken: the gateway answers with its commands, then the acks
            while self.commands:
                command = self.commands.pop(0)
                getattr(self.handler, command[0])(*command[1:])
        for boot, seq, alarm, message in reports:
            print("R %d %s" % (alarm, hexlify(message).decode()))
            self.queue.ack(boot, seq)


def make_app(board, raw, ack=True):
    import json

    from kerbline import config as checker

    from kerbline.app import App
    from kerbline.store.queue import FlashQueue

    from kerbline.mem import drop

    with open("/config.json", "w") as f:
        json.dump(raw, f)
    cfg = checker.load()
    key = checker.take_key(cfg)
    checker = None
    drop("kerbline.config")  # as startup does: the checker's code is not needed after boot
    queue = FlashQueue("/queue.log", cfg["queue_bytes"])
    tap = Tap(queue, ack)
    tap.handler = App(board, cfg, key, queue=queue, link=tap)
    return tap.handler
