"""Drive kerbline.links.mqtt.Client from a test, over stdin/stdout; runs under MicroPython and CPython.

Usage: mqtt_driver.py HOST PORT DEVICE [key=value ...]
  keys: password, keepalive (s), ack_ms, ping_ms, io_ms, backoff_ms, backoff_max_ms, max_packet,
        window, clean (0/1), tls (path of the CA certificate, DER: TLS with the broker verified)
The main loop polls the client every few ms with the real clock (like the device's main loop) and reads
one command line per turn from stdin:
  pub TEXT    publish TEXT at QoS 1    -> "PUB <pid>" or "FULL"
  pub0 TEXT   publish TEXT at QoS 0    -> "PUB0 <result>"
  hold / go   stop / resume calling poll() (the test rearranges the world meanwhile)
  stats       -> "STATS conn=.. resend=.. big=.. bad=.. stray=.. rx=.. inflight=.."
  idle N      N polls with nothing to do -> "IDLE bytes=<heap bytes allocated>" (MicroPython only)
  retry       -> "RETRY <next_retry_ms or None>"
  error       -> "ERROR <repr of the client's last error>"
  close       client.close(), print "CLOSED" and exit
Events: "UP" on connect, "SUBSCRIBED" on SUBACK, "DOWN <error>" when the link drops, "ACK <pid>", "MSG <topic> <len> <payload>"
(payload as text, cut at 40 characters). Every line is flushed at once.
"""
import sys
import time
import select
import gc

from kerbline.links.mqtt import Client

if hasattr(time, "ticks_ms"):
    now = time.ticks_ms
else:

    def now():
        return int(time.monotonic() * 1000)


def say(*parts):
    print(*parts)
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()


def options(args):
    opts = {}
    for a in args:
        k, v = a.split("=", 1)
        opts[k] = v if k in ("password", "tls") else int(v)
    if "clean" in opts:
        opts["clean"] = bool(opts["clean"])
    if "tls" in opts:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        with open(opts.pop("tls"), "rb") as f:
            ctx.load_verify_locations(cadata=f.read())
        opts["ssl"] = ctx
    return opts


def on_message(topic, payload):
    say("MSG", topic.decode(), len(payload), payload[:40].decode())


def on_ack(pid):
    say("ACK", pid)


def main():
    host, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = Client(dev, host, port, on_message=on_message, on_ack=on_ack, **options(sys.argv[4:]))
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    held = False
    was_up = False
    was_sub = False
    say("READY")
    while True:
        if not held:
            c.poll(now())
            if c.connected != was_up:
                was_up = c.connected
                if was_up:
                    say("UP")
                else:
                    say("DOWN", repr(c.error))
            if c.subscribed != was_sub:
                was_sub = c.subscribed
                if was_sub:
                    say("SUBSCRIBED")
        if not poller.poll(5):
            continue
        line = sys.stdin.readline()
        if not line:
            break
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "pub":
            pid = c.publish(arg.encode())
            say("FULL" if pid is None else "PUB " + str(pid))
        elif cmd == "pub0":
            say("PUB0", c.publish(arg.encode(), 0))
        elif cmd == "hold":
            held = True
            say("HELD")
        elif cmd == "go":
            held = False
            say("GOING")
        elif cmd == "stats":
            say(
                "STATS conn=%d resend=%d big=%d bad=%d stray=%d rx=%d inflight=%d"
                % (c.n_conn, c.n_resend, c.n_big, c.n_bad, c.n_stray, c.n_rx, c.in_flight())
            )
        elif cmd == "idle":
            gc.collect()
            before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
            for _ in range(int(arg)):
                c.poll(now())
            after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
            say("IDLE bytes=%d" % (after - before))
        elif cmd == "error":
            say("ERROR", repr(c.error))
        elif cmd == "retry":
            say("RETRY", c.next_retry_ms(now()))
        elif cmd == "close":
            c.close()
            say("CLOSED")
            break


main()
