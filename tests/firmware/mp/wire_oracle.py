"""The firmware's wire code as a line-oriented oracle, for property tests driven from CPython.

One request per stdin line, one answer per stdout line; runs unchanged under MicroPython and CPython:
  build DEVICE KEYHEX JSON   -> "frame HEX": report JSON {boot, seq, time|uptime, records: [[n, v(, t)]]}
  report KEYHEX DEVICE|- HEX -> "ok JSON" (the meaning, streamed) or "reject REASON": a serial frame (DEVICE "-")
                                or an MQTT message whose topic names DEVICE
  command DEVICE KEYHEX HEX  -> "ok JSON" ([cid, op, args]) or "reject REASON"
  cbor HEX                   -> "ok" or "reject REASON"
Anything else the code raises is printed as "crash TYPE MESSAGE": a bug, never an answer.
"""
import gc
import sys
import json
from binascii import hexlify, unhexlify

from kerbline.wire import cbor, command, cose, frame, report, report_parse
from kerbline.wire.hmac256 import HmacKey
from kerbline.wire.reject import Reject


def _records(items):
    out = []
    for item in items:
        out.append(tuple(item))
    return out


def build(device, key_hex, spec):
    data = json.loads(spec)
    payload = report.encode(data["boot"], data["seq"], _records(data["records"]), data.get("time"), data.get("uptime"))
    return "frame " + hexlify(frame.encode(cose.Sealer(device, unhexlify(key_hex)).seal(payload))).decode()


def receive(key_hex, device, data_hex):
    hmac_key = HmacKey(unhexlify(key_hex))
    data = unhexlify(data_hex)
    if device == "-":
        got = []
        deframer = frame.Deframer(got.append, lambda reason: got.append(Reject(reason)))
        deframer.feed(data)
        if not got:
            return "reject none"
        if isinstance(got[0], Reject):
            raise got[0]
        message = got[0]
        expected = None
    else:
        if len(data) > frame.MAX_MESSAGE:
            raise Reject("too_large")
        message = data
        expected = device
    _, payload = cose.verify(message, lambda d: hmac_key, expected)
    return report_parse.parse(payload)


def open_command(device, key_hex, data_hex):
    sealer = cose.Sealer(device, unhexlify(key_hex))
    cid, op, args = command.parse(sealer.open(unhexlify(data_hex)))
    return "ok " + json.dumps([cid, op, args])


def answer(line):
    parts = line.split(" ", 3)
    verb = parts[0]
    if verb == "build":
        return build(parts[1], parts[2], parts[3])
    if verb == "report":
        return receive(parts[1], parts[2], parts[3])
    if verb == "command":
        return open_command(parts[1], parts[2], parts[3])
    if verb == "cbor":
        cbor.loads(unhexlify(parts[1] if len(parts) > 1 else ""))
        return "ok"
    return "crash ValueError unknown verb"


while True:
    line = sys.stdin.readline()
    if not line:
        break
    try:
        reply = answer(line.strip())
        if isinstance(reply, dict):  # a report's meaning: streamed, a 32-record JSON text is large for the heap
            sys.stdout.write("ok ")
            json.dump(reply, sys.stdout)
            reply = ""
    except Reject as e:
        reply = "reject " + e.args[0]
    except Exception as e:
        reply = "crash %s %s" % (type(e).__name__, e)
    line = None
    gc.collect()  # as a device's main loop does between messages; keeps the 64 KB heap unfragmented
    sys.stdout.write(reply + "\n")
    try:
        sys.stdout.flush()
    except AttributeError:  # MicroPython's stdout writes through
        pass
