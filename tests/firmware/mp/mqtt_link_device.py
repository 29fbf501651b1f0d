"""A device's MQTT link (kerbline.links.mqtt_link) with its real flash queue and command gate.

main(flash, host, port, keyhex, n): queues n reports in FLASH/queue, runs the link until the queue is
empty (printing "EMPTY left sent acked"), then until a `ping` command has arrived ("PING"), then exits.
Imported precompiled (see the mp_lib fixture): compiling it inside a 64 KB VM would cost the heap the
link needs.
"""
import time
from binascii import unhexlify

from kerbline.downlink import Downlink
from kerbline.links.mqtt_link import open_mqtt
from kerbline.store.queue import FlashQueue
from kerbline.wire import cose, report


class Handler:
    ping = False

    def on_ping(self):
        self.ping = True

    def log(self, text):
        print(text)


def main(flash, host, port, key_hex, n):
    port, key, n = int(port), unhexlify(key_hex), int(n)
    sealer = cose.Sealer("bin-0042", key)
    queue = FlashQueue(flash + "/queue", 16384)
    for seq in range(1, n + 1):
        queue.append(sealer.seal(report.encode(7, seq, [("fill", seq)], 1764345600 + seq)), 7, seq, False)
    handler = Handler()
    cfg = {"id": "bin-0042", "link": {"type": "mqtt", "host": host, "port": port, "tls": False, "keepalive": 60}}
    link = open_mqtt(cfg, Downlink(sealer, flash + "/cid"), queue, handler)
    deadline = time.ticks_add(time.ticks_ms(), 20000)
    while len(queue) and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        link.poll(time.ticks_ms())
        time.sleep_ms(5)
    print("EMPTY %d %d %d" % (len(queue), link.sent, link.acked))
    while not handler.ping and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        link.poll(time.ticks_ms())
        time.sleep_ms(5)
    print("PING" if handler.ping else "NO PING")
    link.close()
