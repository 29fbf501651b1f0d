"""The device's own MQTT 3.1.1 client (MicroPython and CPython).

Why our own: micropython-lib's umqtt.simple waits for each QoS 1 PUBACK before publish returns (one
message in flight), reads a packet's body with blocking reads and allocates it whole whatever its size;
umqtt.robust retries by sleeping inside the client. The device's main loop cannot block (it also samples
sensors and drives a lamp), and the store-and-forward queue must know exactly which report the broker
acknowledged. This client is driven entirely from `poll(now)`, never sleeps and never waits on a read.

What it does:
- CONNECT with client id = user name = device id, optional password, clean-session flag, keepalive, and
  a last will `kerbline/v1/{dev}/state` = `offline` (retained, QoS 1). A refused CONNACK becomes an
  MQTTError naming the reason, kept in `error`; the client then retries with backoff.
- After CONNACK: retained `online` on the state topic (QoS 0), SUBSCRIBE `kerbline/v1/{dev}/down` at
  QoS 1 (SUBACK checked: a refusal is kept in `error`, `subscribed` stays False), then every unacked
  report is sent again with the DUP flag and its original packet id.
- `publish(payload)` sends to `kerbline/v1/{dev}/up` at QoS 1 (or 0). At most `window` QoS 1 messages are
  in flight; when the window is full publish returns None and the caller keeps the report queued.
  A PUBACK frees its slot and calls `on_ack(pid)`. A message without PUBACK after `ack_ms` is sent again
  with DUP (MQTT 3.1.1 allows this; it only requires the resend on reconnect). A QoS 1 message handed
  over while the link is down waits in its slot and goes out on connect.
  The client keeps a reference to the payload until its PUBACK: the caller must not change it.
- Incoming PUBLISH (QoS 0/1) goes to `on_message(topic, payload)` (both bytes), then QoS 1 is PUBACKed.
  Callbacks run inside poll(); an exception from one drops the connection like any failure (kept in
  `error`), so a command that crashes its handler is not acknowledged and cannot wedge the loop.
- PINGREQ after `keepalive` seconds without sending or receiving; no PINGRESP within `ping_ms` means the
  connection is dead. No CONNACK within `io_ms` likewise.
- Reconnect: exponential backoff from `backoff_ms` doubling to `backoff_max_ms`, each wait drawn from
  [d/2, d] (jitter, so a fleet does not reconnect in step). The caller reads `next_retry_ms(now)`.
- TLS: pass an SSLContext as `ssl` (CPython's or MicroPython's; both have `wrap_socket`).

Bounds: receive buffer `max_packet` + 5 bytes and send buffer for one `max_payload` report, both
allocated once. An incoming packet whose remaining length exceeds `max_packet` is never allocated: its
bytes are read and thrown away (a QoS 1 PUBLISH is still PUBACKed so the broker's in-flight window toward
us does not fill up) and `n_big` is counted. Malformed packets or unexpected packet types drop the
connection (`n_bad`). At most 8 socket reads per poll, so a flood cannot hold the main loop.

Time: `now` is a millisecond tick from the caller (`time.ticks_ms()` on the board, any monotonic ms
counter on CPython); only differences are used, through `ticks_diff`, so wrap-around is harmless.
The socket is non-blocking for reads; writes get a timeout of `io_ms` (a write that times out leaves a
broken stream, so the connection is dropped). The TCP connect and the TLS handshake are bounded by the
same timeout; name resolution (getaddrinfo) is not, so the board should be given the broker's address.

Footprint (measured under the unix-port VM, tests/firmware/test_mqtt_client.py and the module's .mpy):
about 5 KB of .mpy; an instance with the defaults holds about 4 KB (both buffers); an idle poll
allocates nothing, a report's publish and PUBACK about nothing; a packet that arrives split over two
reads costs one small memoryview.
"""
import socket
import sys
from random import getrandbits

from kerbline.compat import const

try:
    from time import ticks_diff
except ImportError:  # CPython: plain monotonic milliseconds, no wrap-around

    def ticks_diff(a, b):
        return a - b


if sys.implementation.name == "micropython":
    _WANT_READ = ()  # MicroPython's TLS socket returns None when it has no data
else:
    from ssl import SSLWantReadError as _WANT_READ

_EAGAIN = const(11)
_MAX_READS = const(8)
_OFF = const(0)  # closed by the caller
_DOWN = const(1)  # no connection; next attempt after the backoff wait
_WAIT = const(2)  # CONNECT sent, waiting for CONNACK
_UP = const(3)

_REFUSED = (
    "bad protocol version",
    "client id rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


class MQTTError(Exception):
    """A protocol-level failure: refused connection, timeout, malformed or unexpected packet."""


def _str(b):
    return len(b).to_bytes(2, "big") + b


def _packet(first, body):
    n = len(body)
    head = bytearray((first,))
    while True:
        head.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(head) + body


class Client:
    def __init__(
        self,
        dev,
        host,
        port=1883,
        password=None,
        keepalive=60,
        clean=True,
        window=4,
        max_packet=1200,
        max_payload=1024,
        ack_ms=10000,
        ping_ms=10000,
        io_ms=5000,
        backoff_ms=1000,
        backoff_max_ms=60000,
        ssl=None,
        on_message=None,
        on_ack=None,
    ):
        pre = b"kerbline/v1/" + dev.encode() + b"/"
        self.up = pre + b"up"
        self.state = pre + b"state"
        self._addr = (host, port, ssl)
        self.on_message = on_message
        self.on_ack = on_ack
        user = dev.encode()
        flags = 0xAC | (0x02 if clean else 0) | (0x40 if password else 0)  # user, will retain+QoS 1+flag
        body = b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big")
        body += _str(user) + _str(self.state) + _str(b"offline") + _str(user)
        if password:
            body += _str(password.encode() if isinstance(password, str) else password)
        self._connect = _packet(0x10, body)  # holds the password: never logged
        self._sub = bytearray(_packet(0x82, b"\x00\x00" + _str(pre + b"down") + b"\x01"))
        self._ka = keepalive * 1000
        self.ack_ms = ack_ms
        self.ping_ms = ping_ms
        self.io_ms = io_ms
        self._io = io_ms / 1000
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.max_payload = max_payload
        self._rx = bytearray(max_packet + 5)
        self._mv = memoryview(self._rx)
        self._rxn = 0
        self._skip = 0
        self._tx = bytearray(5 + 2 + len(self.up) + 2 + max_payload)
        self._ack = bytearray(b"\x40\x02\x00\x00")
        self._pid = [0] * window  # 0 = free slot
        self._msg = [None] * window
        self._at = [0] * window
        self._dup = bytearray(window)  # 1 once the slot's message has been sent
        self._next = 0
        self._s = None
        self._st = _DOWN
        self.tries = 0
        self._since = 0  # when the state (DOWN or WAIT) began
        self._wait = 0  # first attempt at the first poll
        self.now = 0
        self._tx_at = self._rx_at = 0
        self._ping_at = None  # when the outstanding PINGREQ was sent
        self.subscribed = False
        self.error = None
        self.n_conn = 0  # CONNACKs accepted
        self.n_resend = 0  # QoS 1 messages sent again with DUP
        self.n_big = 0  # incoming packets over max_packet, discarded
        self.n_bad = 0  # malformed or unexpected packets (connection dropped)
        self.n_stray = 0  # PUBACKs for no message in flight (late duplicates)
        self.n_rx = 0  # PUBLISH handed to on_message

    @property
    def connected(self):
        return self._st == _UP

    def in_flight(self):
        n = 0
        for k in range(len(self._pid)):
            if self._pid[k]:
                n += 1
        return n

    def next_retry_ms(self, now):
        """Milliseconds until the next connection attempt, or None if not waiting to reconnect."""
        if self._st != _DOWN:
            return None
        if not self._wait:
            return 0
        return max(0, self._wait - ticks_diff(now, self._since))

    def poll(self, now):
        """Do everything due at `now`: connect, read and handle packets, keepalive, resends.

        Never raises and never blocks longer than one connect or write (`io_ms`); a failure drops the
        connection, is kept in `error` and schedules the next attempt.
        """
        self.now = now
        st = self._st
        if st == _OFF or (st == _DOWN and self._wait and ticks_diff(now, self._since) < self._wait):
            return
        try:
            if st == _DOWN:
                self._open()
            self._read()
            if self._st == _WAIT:
                if ticks_diff(now, self._since) >= self.io_ms:
                    raise MQTTError("no CONNACK")
            elif self._st == _UP:
                self._timers(now)
        except Exception as e:
            if self._st >= _WAIT:  # else a callback's publish or close() already ended the connection
                self._fail(e)

    def publish(self, payload, qos=1):
        """Hand one message to the link; returns its packet id (QoS 1), 0 (QoS 0 sent), or None.

        None means not taken: QoS 1 window full, or QoS 0 while disconnected. A QoS 1 message that was
        taken stays in flight (across reconnects) until its PUBACK calls `on_ack(pid)`.
        """
        if len(payload) > self.max_payload:
            raise ValueError("payload over max_payload")
        if not qos:
            if self._st != _UP:
                return None
            try:
                self._pub(self.up, payload, 0x30, 0)
            except Exception as e:
                self._fail(e)
            return 0
        for k in range(len(self._pid)):
            if not self._pid[k]:
                break
        else:
            return None
        pid = self._new_pid()
        self._pid[k] = pid
        self._msg[k] = payload
        self._dup[k] = 0
        if self._st == _UP:
            try:
                self._send_slot(k)
            except Exception as e:
                self._fail(e)
        return pid

    def close(self):
        """Leave cleanly: retained `offline`, DISCONNECT (so no will), and stop reconnecting."""
        if self._st == _UP:
            try:
                self._pub(self.state, b"offline", 0x31, 0)
                self._send(b"\xe0\x00", 2)
            except Exception:
                pass
        self._close()
        self._st = _OFF

    # -- connection -------------------------------------------------------------------------------

    def _open(self):
        self._st = _WAIT
        self._since = self.now
        self._rxn = self._skip = 0
        host, port, ssl = self._addr
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        s = self._s = raw = socket.socket(ai[0], ai[1], ai[2])
        s.settimeout(self._io)
        s.connect(ai[-1])
        if ssl:
            s = self._s = ssl.wrap_socket(s, server_hostname=host)
        # CPython's sockets and MicroPython's TLS socket have recv_into/sendall; MicroPython's plain
        # socket has readinto/write instead. MicroPython's TLS socket has no settimeout: the raw
        # socket's timeout governs it.
        self._std = hasattr(s, "recv_into")
        self._rd = s.recv_into if self._std else s.readinto
        self._to = s if hasattr(s, "settimeout") else raw
        self._send(self._connect, len(self._connect))

    def _up(self):
        self._st = _UP
        self.tries = 0
        self.n_conn += 1
        self.error = None
        self.subscribed = False
        self._ping_at = None
        self._rx_at = self.now
        self._pub(self.state, b"online", 0x31, 0)
        pid = self._new_pid()
        self._sub[2] = pid >> 8
        self._sub[3] = pid & 0xFF
        self._send(self._sub, len(self._sub))
        for k in range(len(self._pid)):
            if self._pid[k]:
                self._send_slot(k)

    def _fail(self, e):
        self.error = e
        self._close()
        d = min(self.backoff_max_ms, self.backoff_ms << min(self.tries, 16))
        self.tries += 1
        self._since = self.now
        self._wait = d // 2 + getrandbits(16) % (d // 2 + 1)
        self._st = _DOWN

    def _close(self):
        if self._s:
            try:
                self._s.close()
            except Exception:
                pass
        self._s = None
        self._rxn = self._skip = 0

    # -- sending ----------------------------------------------------------------------------------

    def _send(self, buf, n):
        self._to.settimeout(self._io)
        try:
            if self._std:
                self._s.sendall(memoryview(buf)[:n])
            elif self._s.write(buf, 0, n) != n:
                raise MQTTError("short write")
        finally:
            self._to.settimeout(0)
        self._tx_at = self.now

    def _pub(self, topic, payload, first, pid):
        t = self._tx
        tl = len(topic)
        pl = len(payload)
        n = 2 + tl + pl + (2 if pid else 0)
        t[0] = first
        i = 1
        while True:
            t[i] = (n & 0x7F) | (0x80 if n > 0x7F else 0)
            i += 1
            n >>= 7
            if not n:
                break
        t[i] = tl >> 8
        t[i + 1] = tl & 0xFF
        i += 2
        t[i : i + tl] = topic
        i += tl
        if pid:
            t[i] = pid >> 8
            t[i + 1] = pid & 0xFF
            i += 2
        t[i : i + pl] = payload
        self._send(t, i + pl)

    def _send_slot(self, k):
        if self._dup[k]:
            self.n_resend += 1
        self._pub(self.up, self._msg[k], 0x3A if self._dup[k] else 0x32, self._pid[k])
        self._dup[k] = 1
        self._at[k] = self.now

    def _new_pid(self):
        while True:
            self._next = self._next % 65535 + 1
            if self._next not in self._pid:
                return self._next

    def _timers(self, now):
        if self._ping_at is not None:
            if ticks_diff(now, self._ping_at) >= self.ping_ms:
                raise MQTTError("no PINGRESP")
        elif self._ka and (
            ticks_diff(now, self._tx_at) >= self._ka or ticks_diff(now, self._rx_at) >= self._ka
        ):
            self._send(b"\xc0\x00", 2)
            self._ping_at = now
        for k in range(len(self._pid)):
            if self._pid[k] and ticks_diff(now, self._at[k]) >= self.ack_ms:
                self._send_slot(k)

    # -- receiving --------------------------------------------------------------------------------

    def _read(self):
        for _ in range(_MAX_READS):
            n = self._rxn
            try:
                got = self._rd(self._mv[n:] if n else self._mv)
            except _WANT_READ:
                return
            except OSError as e:
                if e.args[0] == _EAGAIN:
                    return
                raise
            if got is None:
                return
            if not got:
                raise MQTTError("closed by broker")
            self._rxn = n + got
            self._rx_at = self.now
            self._parse()

    def _parse(self):
        rx = self._rx
        n = self._rxn
        i = 0
        while i < n and self._s:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            # remaining length: 1 to 4 bytes, 7 bits each, low first
            rl = sh = 0
            j = i + 1
            while j < n:
                b = rx[j]
                j += 1
                rl |= (b & 0x7F) << sh
                if b < 0x80:
                    break
                sh += 7
                if sh > 21:
                    self._bad("bad remaining length")
            else:
                break  # header not all read yet
            if rl > len(self._rx) - 5:  # max_packet
                if not self._big(i, j, n, j + rl):
                    break
                continue  # _big set _skip to the whole packet, consumed from i on
            if j + rl > n:
                break
            end = j + rl
            self._handle(rx[i], j, end)
            i = end
        if i >= n:
            self._rxn = 0
        else:
            if i:
                rx[0 : n - i] = self._mv[i:n]
            self._rxn = n - i

    def _big(self, i, j, n, end):
        """Start discarding an oversized packet; a QoS 1 PUBLISH is PUBACKed first. False: need more."""
        rx = self._rx
        if rx[i] & 0xF6 == 0x32:  # PUBLISH at QoS 1
            if j + 2 > n:
                return False
            pid_at = j + 2 + (rx[j] << 8 | rx[j + 1])
            if pid_at + 2 - i <= len(rx):
                if pid_at + 2 > n:
                    return False
                self._ack[2] = rx[pid_at]
                self._ack[3] = rx[pid_at + 1]
                self._send(self._ack, 4)
        self.n_big += 1
        self._skip = end - i
        return True

    def _handle(self, first, j, end):
        rx = self._rx
        t = first >> 4
        if t == 3:
            qos = (first >> 1) & 3
            if qos > 1 or end - j < 2:
                self._bad("bad PUBLISH")
            tl = rx[j] << 8 | rx[j + 1]
            k = j + 2 + tl + (2 if qos else 0)
            if k > end:
                self._bad("bad PUBLISH")
            topic = bytes(self._mv[j + 2 : j + 2 + tl])
            payload = bytes(self._mv[k:end])
            self.n_rx += 1
            if self.on_message:
                self.on_message(topic, payload)
            if qos:
                self._ack[2] = rx[k - 2]
                self._ack[3] = rx[k - 1]
                self._send(self._ack, 4)
        elif t == 4 and end - j == 2:
            pid = rx[j] << 8 | rx[j + 1]
            for k in range(len(self._pid)):
                if self._pid[k] == pid:
                    self._pid[k] = 0
                    self._msg[k] = None
                    if self.on_ack:
                        self.on_ack(pid)
                    return
            self.n_stray += 1
        elif t == 13:
            self._ping_at = None
        elif t == 9 and end - j == 3:
            if rx[j + 2] & 0x80:
                self.error = MQTTError("SUBSCRIBE refused")
            else:
                self.subscribed = True
        elif t == 2 and end - j == 2 and self._st == _WAIT:
            rc = rx[j + 1]
            if rc:
                raise MQTTError("connection refused: %s (%d)" % (_REFUSED[rc - 1] if rc < 6 else "?", rc))
            self._up()
        else:
            self._bad("unexpected packet type " + str(t))

    def _bad(self, why):
        self.n_bad += 1
        raise MQTTError(why)
