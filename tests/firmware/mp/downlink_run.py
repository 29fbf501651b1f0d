"""Feed a sequence of messages to the firmware's Downlink and print what it did (MicroPython and CPython).

Usage: downlink_run.py FOLDER STEPS_JSON
STEPS_JSON: {"device": id, "key": hex, "steps": [["msg", hex] | ["reboot"] | ["garble_state"], ...]}
  msg           one message to `Downlink.handle`; prints "applied OP" or "refused REASON"
  reboot        a new Downlink on the same flash, as after a reboot; prints "boot last_cid=N"
  garble_state  overwrite the cid file with garbage
Each handler call prints "call NAME ARGS saved=N", N being the cid on flash at the moment of the call.
The Downlink's log lines are printed as "log TEXT". At the end: "rejected REASON=N ..." (sorted).
"""
import json
import sys
from binascii import unhexlify

from kerbline.downlink import Downlink
from kerbline.wire.cose import Sealer


def saved(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "none"


class Handler:
    def __init__(self, path):
        self.path = path

    def _call(self, name, args):
        print("call %s %s saved=%s" % (name, args, saved(self.path)))

    def on_ack(self, boot, seq):
        self._call("ack", "%d %d" % (boot, seq))

    def on_time(self, t):
        self._call("time", t)

    def on_config(self, settings):
        self._call("config", sorted(settings.items()))

    def on_reboot(self):
        self._call("reboot", "")

    def on_ping(self):
        self._call("ping", "")


def log(text):
    print("log " + text)


def main(folder, steps_path):
    with open(steps_path) as f:
        spec = json.load(f)
    path = folder + "/cid"
    sealer = Sealer(spec["device"], unhexlify(spec["key"]))
    handler = Handler(path)
    downlink = Downlink(sealer, path, log)
    rejected = {}
    for step in spec["steps"]:
        if step[0] == "reboot":
            for reason in downlink.rejected:
                rejected[reason] = rejected.get(reason, 0) + downlink.rejected[reason]
            downlink = Downlink(sealer, path, log)
            print("boot last_cid=%d" % downlink.last_cid)
        elif step[0] == "garble_state":
            with open(path, "wb") as f:
                f.write(b"\xff\x00garbage")
        else:
            before = dict(downlink.rejected)
            op = downlink.handle(unhexlify(step[1]), handler)
            if op is None:
                for reason in downlink.rejected:
                    if downlink.rejected[reason] != before.get(reason, 0):
                        print("refused " + reason)
            else:
                print("applied " + op)
    for reason in downlink.rejected:
        rejected[reason] = rejected.get(reason, 0) + downlink.rejected[reason]
    print("rejected " + " ".join("%s=%d" % (r, rejected[r]) for r in sorted(rejected)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
