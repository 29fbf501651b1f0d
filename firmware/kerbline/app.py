"""The application core both kinds share: identity, boot and seq, alarms, reports, the link, commands.

A report is built (`kerbline.wire.report.encode`), sealed (COSE_Mac0 under the device key) and appended
to the flash queue (`kerbline.store.queue.FlashQueue`); the link sends it from there and only an ack
removes it. `send()` returns once the report is on flash.

Boot and seq: a boot that is not a deep-sleep wake takes the next boot number from flash
(`persist.next_boot`) and starts seq at 0; a wake continues the boot and seq kept in RTC memory
(`persist.State`), so (boot, seq) is unique for the device's whole life. `time` is the unix time when
the clock is set, else `uptime` (ms since the boot, across deep sleeps) is sent.

Alarms are named as on the wire and kept as bits (ALARMS order) in the RTC state. A report carries an
`alarm` record for every alarm active at that moment; a report that raises an alarm not active before
is sent at once and marked as an alarm in the queue (kept when the queue overflows).

Commands reach the app through the link's `Downlink` as on_time / on_config / on_reboot / on_ping
(on_ack only if a link hands acks up). A reboot or a ping is done by the cycle's loop at its next turn,
after the link has finished with the current frame.

The link is opened lazily and reopened after a failure (OSError or any other error from the link) every
30 s, counted in `link_errors`: the device keeps sensing, and a light keeps lighting, when the gateway or
the line is gone.

Files on flash: /queue.log (the queue), /cid (the last command id applied), /boot.cnt (persist).
(Module-level names are few on purpose: each one costs RAM for good on a 64 KB heap.)
"""
from kerbline import persist
from kerbline.board import DEEPSLEEP
from kerbline.compat import const
from kerbline.wire.cose import Sealer

ALARMS = ("full", "fire", "tilt", "lowbatt", "lamp_fail", "sensor_fault")
_LINK_RETRY_MS = const(30000)


class App:
    def __init__(self, board, cfg, key, queue=None, link=None, log=print):
        self.board = board
        self.cfg = cfg
        self.log = log
        self.sealer = Sealer(cfg["id"], key)
        self.state = persist.State()
        self._resume()
        if queue is None:
            from kerbline.store.queue import FlashQueue

            queue = FlashQueue("queue.log", cfg["queue_bytes"])
        self.queue = queue
        self.link = link
        self._retry_at = None
        self.link_errors = 0
        self.ping = False
        self.reboot = False
        self.crashes = 0  # crashes before this boot (startup sets it); a healthy run clears them

    def healthy(self):
        """The run is healthy: the crashes before it no longer count towards safe mode."""
        if self.crashes:
            from kerbline import crashlog

            crashlog.healthy()
            self.crashes = 0

    def _resume(self):
        """Continue the boot from before a deep sleep (state in RTC memory), else take a new boot number."""
        board = self.board
        st = self.state
        if board.reset_cause() == DEEPSLEEP and st.unpack(board.persist_read()) and st.boot:
            if st.boot == persist.read_boot():
                return
        self.state = st = persist.State()
        st.boot = persist.next_boot()
        st.rtc0 = board.rtc_ms()

    def save(self):
        """Keep boot, seq and alarm state in RTC memory (before a deep sleep)."""
        self.board.persist_write(self.state.pack())

    def uptime_ms(self):
        return self.board.rtc_ms() - self.state.rtc0

    def was(self, alarm):
        """Whether `alarm` was active at the last sample (for hysteresis)."""
        return bool(self.state.alarms >> ALARMS.index(alarm) & 1)

    def alarm_records(self, active, records):
        """Append an alarm record per name in `active`; True when one of them was not active before."""
        bits = 0
        for alarm in active:
            bit = 1 << ALARMS.index(alarm)
            if not bits & bit:  # two sensors may both report sensor_fault: one record
                bits |= bit
                records.append(("alarm", alarm))
        raised = bits & ~self.state.alarms
        self.state.alarms = bits
        return raised != 0

    def send(self, records, alarm=False):
        """Seal a report of `records` and put it on the flash queue; returns its seq."""
        from kerbline.wire import report

        st = self.state
        st.seq += 1
        t = self.board.unix_time()
        payload = report.encode(st.boot, st.seq, records, t, None if t is not None else self.uptime_ms())
        self.queue.append(self.sealer.seal(payload), st.boot, st.seq, alarm)
        return st.seq

    # ------------------------------------------------------------ link

    def poll_link(self):
        """One turn of the link; never raises (a failing link is closed and retried later)."""
        board = self.board
        now = board.ticks_ms()
        if self.link is None:
            if self._retry_at is not None and board.ticks_diff(now, self._retry_at) < _LINK_RETRY_MS:
                return
            try:
                self.link = self.open_link()
            except Exception as e:
                return self._link_failed(now, e)
        try:
            self.link.poll(now)
        except Exception as e:
            self.link = None
            self._link_failed(now, e)

    def _link_failed(self, now, e):
        self.link_errors += 1
        self._retry_at = now
        self.log("link: %s %r; retry in 30 s" % (type(e).__name__, e))

    def open_link(self):
        from kerbline.downlink import Downlink

        board = self.board
        spec = self.cfg["link"]
        downlink = Downlink(self.sealer, "cid", self.log)
        if spec["type"] == "serial":
            from kerbline.links.serial import SerialLink

            uart = board.uart(spec["uart"], spec["baud"], spec["tx"], spec["rx"])
            return SerialLink(uart, downlink, self.queue, self, log=self.log)
        if not board.network_up(15000):
            raise OSError(118)  # EHOSTUNREACH: no WLAN
        from kerbline.links.mqtt_link import open_mqtt

        return open_mqtt(self.cfg, downlink, self.queue, self)

    # ------------------------------------------------------------ commands (called by the Downlink)

    def on_time(self, unix_seconds):
        before = self.board.rtc_ms()
        self.board.set_unix_time(unix_seconds)
        self.state.rtc0 += self.board.rtc_ms() - before  # uptime does not jump with the clock

    def on_config(self, changes):
        from kerbline import config
        from kerbline.mem import drop

        why = config.apply(self.cfg, changes)
        drop("kerbline.config")
        self.log("config: " + (why or "applied %s" % ", ".join(sorted(changes))))

    def on_reboot(self):
        self.reboot = True

    def on_ping(self):
        self.ping = True

    def on_ack(self, boot, seq):
        self.queue.ack(boot, seq)
