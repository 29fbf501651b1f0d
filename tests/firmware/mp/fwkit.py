"""Test kit for the firmware tests under MicroPython (compiled into the device root's /lib by the tests).

- `config(kind, **settings)`: a valid config dict (fake test key), `write_config(cfg)` to /config.json
- `Gateway`: the in-test stand-in for the link (kerbline.links.*): it takes reports from the real flash
  queue as a link would, checks each as the gateway does (COSE tag under the device key, report shape),
  prints it as one line "R <json>" for the pytest side, and acks it.
- `make_app(board, cfg)`: the App on a scripted board, with the real FlashQueue and a Gateway.
"""
import json

from kerbline import config as _config
from kerbline.wire import cose, report_parse
from kerbline.wire.hmac256 import HmacKey

DEVICE = {"bin": "bin-0042", "light": "lamp-0117"}
# fake test keys from tests/vectors/devices.json
KEYS = {
    "bin-0042": "cd128f3348a040664141d96140729e1b738956419d7b367d4294e99e7e79b1eb",
    "lamp-0117": "2679c1e7ff7de74fcf9f630f5a2ce9fc3d4153b270329e4c5e6c476a48467066",
}
PINS = {
    "bin": {"trig": 5, "echo": 18, "temp": 4, "batt": 34, "tilt": 27, "lid": 26},
    "light": {"scl": 22, "sda": 21, "ldr": 35, "relay": 25, "pwm": 26, "volt": 32, "curr": 33, "temp": 4},
}


def config(kind, **settings):
    device = DEVICE[kind]
    cfg = {"id": device, "kind": kind, "key": KEYS[device], "board": "scripted",
           "link": {"type": "serial"}, "pins": dict(PINS[kind])}
    cfg.update(settings)
    return cfg


def write_config(cfg, path="/config.json"):
    with open(path, "w") as f:
        json.dump(cfg, f)


class Gateway:
    def __init__(self, queue, device, key_hex, ack=True):
        from binascii import unhexlify

        self.queue = queue
        self.device = device
        self.key = HmacKey(unhexlify(key_hex))
        self.ack = ack
        self.polls = 0
        self.seen = 0

    def poll(self, now):
        self.polls += 1
        if not self.ack:
            return
        for boot, seq, alarm, message in self.queue.peek(4):
            _, payload = cose.verify(message, self._key, self.device)
            meaning = report_parse.parse(payload)
            meaning["alarm_flag"] = alarm
            print("R " + json.dumps(meaning))
            self.seen += 1
            self.queue.ack(boot, seq)

    def _key(self, device):
        return self.key


def make_app(board, cfg, ack=True):
    from kerbline.app import App
    from kerbline.store.queue import FlashQueue

    cfg = _config.check(cfg)
    queue = FlashQueue("/queue.log", cfg["queue_bytes"])
    gateway = Gateway(queue, cfg["id"], cfg["key"], ack)
    return App(board, cfg, _config.take_key(cfg), queue=queue, link=gateway)
