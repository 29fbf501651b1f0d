"""Check golden vectors with the firmware's wire code; runs unchanged under MicroPython and CPython.

Usage: check_vectors.py VECTOR_DIR NAME [NAME ...]   (NAME like valid/report_bin)
Prints one line per vector, "ok NAME" or "FAIL NAME: why", and exits 1 if any failed. Each vector is
loaded on its own so the run fits a 64 KB heap.
"""
import sys
import json
import gc
from binascii import hexlify, unhexlify

from kerbline.wire import command, cose, frame, report, report_parse
from kerbline.wire.hmac256 import HmacKey
from kerbline.wire.reject import Reject


def load(path):
    with open(path) as f:
        return json.load(f)


def hx(data):
    return hexlify(data).decode()


def report_args(meaning):
    records = []
    for r in meaning["records"]:
        value = r.get("v", r.get("vs", r.get("vb")))
        if "t" in r:
            records.append((r["n"], value, r["t"]))
        else:
            records.append((r["n"], value))
    return records


def check_valid(case, keys):
    device = case["device"]
    sealer = cose.Sealer(device, keys[device])
    meaning = case["meaning"]
    if case["type"] == "report":
        payload = report.encode(
            meaning["boot"], meaning["seq"], report_args(meaning), meaning.get("time"), meaning.get("uptime")
        )
        parsed = report_parse.parse(unhexlify(case["payload"]))
        if parsed != meaning:
            return "parsed meaning differs: %r" % (parsed,)
    else:
        args = {}
        for k, v in meaning["args"].items():
            args[command_arg_key(meaning["op"], k)] = v
        payload = command.encode(meaning["cid"], meaning["op"], args)
        cid, op, parsed_args = command.parse(unhexlify(case["payload"]))
        if (cid, op, parsed_args) != (meaning["cid"], meaning["op"], args):
            return "parsed command differs: %r" % ((cid, op, parsed_args),)
    if hx(payload) != case["payload"]:
        return "payload %s != %s" % (hx(payload), case["payload"])
    if hx(sealer.protected) != case["protected"]:
        return "protected header differs"
    message = sealer.seal(payload)
    if hx(message) != case["cose"]:
        return "cose %s != %s" % (hx(message), case["cose"])
    if hx(frame.encode(message)) != case["frame"]:
        return "frame %s != %s" % (hx(frame.encode(message)), case["frame"])
    got_device, got_payload = cose.verify(message, lambda d: HmacKey(keys[d]) if d in keys else None, device)
    if got_device != device or got_payload != payload:
        return "verify returned something else"
    return None


_ARG_KEYS = {"boot": command.A_BOOT, "seq": command.A_SEQ, "time": command.A_TIME}


def command_arg_key(op, name):
    return name if op == "config" else _ARG_KEYS[name]


def receive(case, keys):
    """Run a message through the receiving side; return the reason it was refused, or 'ok'."""
    if case["link"] == "serial":
        results = []
        deframer = frame.Deframer(results.append, lambda reason: results.append(Reject(reason)))
        deframer.feed(unhexlify(case["frame"]))
        deframer.feed(b"\x00")
        if not results:
            return "no frame"
        # a 0x00 inside a frame splits it: the receiver's verdict on the first piece is what counts
        if isinstance(results[0], Reject):
            return results[0].reason
        message = results[0]
        expected = None
    else:
        message = unhexlify(case["message"])
        if len(message) > frame.MAX_MESSAGE:
            return "too_large"
        expected = case["topic"].split("/")[2]
    try:
        _, payload = cose.verify(message, lambda d: HmacKey(keys[d]) if d in keys else None, expected)
        if case.get("type", "report") == "command":
            command.parse(payload)
        else:
            report_parse.parse(payload)
    except Reject as e:
        return e.reason
    return "ok"


def main(vector_dir, names):
    keys = {}
    for entry in load(vector_dir + "/devices.json")["devices"]:
        keys[entry["id"]] = unhexlify(entry["key"])
    failed = 0
    for name in names:
        case = load(vector_dir + "/" + name + ".json")
        try:
            if case["expect"] == "ok":
                why = check_valid(case, keys)
            else:
                got = receive(case, keys)
                why = None if got == case["expect"] else "reason %s, expected %s" % (got, case["expect"])
        except Exception as e:  # a crash is a failure of the vector, reported, not a dead run
            why = "crashed: %s %r" % (type(e).__name__, e)
        if why:
            failed += 1
            print("FAIL %s: %s" % (name, why))
        else:
            print("ok %s" % name)
        case = None
        gc.collect()
    sys.exit(1 if failed else 0)


main(sys.argv[1], sys.argv[2:])
