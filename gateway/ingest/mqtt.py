"""MQTT ingest: reports from `kerbline/v1/+/up` (or `$share/{group}/kerbline/v1/+/up`), PUBACK after commit.

The session is persistent (clean start off, a Session Expiry Interval), so while the gateway is down or
restarting the broker keeps our subscription and queues the reports; a report received but not yet
committed when the gateway dies was never PUBACKed, and the broker sends it again on the next connection
(MQTT 5 requires it). Each report is verified in the read callback; the reports accepted from one socket
read go to the spool as one batch (one future), and once that batch is committed their PUBACKs (stored
and duplicate reports alike) go out together on the connection they came in on. A refused message is
PUBACKed at once: refusing it is final (it is counted and quarantined), and an unacknowledged message
would hold one slot of the broker's in-flight window for the rest of the connection.

A report the spool could not store (full of alarms, or its disk failing) is not acknowledged; since the
broker resends only on a new connection, the connection is dropped `REDELIVER_AFTER_S` later so the
report comes again.

Device state: `kerbline/v1/+/state` (retained `online`, will `offline`) is subscribed at QoS 0 without
`$share` (every gateway wants every device's state) and passed to `on_state`. Commands go out on
`kerbline/v1/{dev}/down` at QoS 1 (`publish`).

Reconnect: exponential backoff with jitter (upstream's RetryPolicy), from `reconnect_min_s` to
`reconnect_max_s`; a connection that came up resets it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.config import MqttSection
from gateway.ingest.inflight import InFlight
from gateway.ingest.mqtt5 import ConnectOptions, MqttConnection, MqttError
from gateway.logging import fields
from gateway.spool import SubmitResult
from gateway.upstream import RetryPolicy
from gateway.verify import Received, Verifier
from gateway.wire import down_topic
from gateway.wire.identity import TOPIC_ROOT

log = logging.getLogger("gateway.ingest.mqtt")

UP_FILTER = f"{TOPIC_ROOT}/+/up"
STATE_FILTER = f"{TOPIC_ROOT}/+/state"
REDELIVER_AFTER_S = 5.0
# topic -> (leaf, device, topic text); cleared when it grows past this (a topic flood cannot grow it)
_TOPIC_CACHE = 65536

# on_state(device, "online" | "offline" | other text)
StateHandler = Callable[[str, str], None]


def default_client_id() -> str:
    """`kerbline-gateway-{host}`: stable across restarts (the session is tied to it), distinct per host."""
    host = "".join(c for c in socket.gethostname().lower() if c.isalnum() or c == "-")[:40]
    return f"kerbline-gateway-{host or 'host'}"


def tls_context(config: MqttSection) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if config.cert_file is not None and config.key_file is not None:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    return context


class MqttIngest:
    def __init__(self, config: MqttSection, verifier: Verifier, on_state: StateHandler | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.verifier = verifier
        self.on_state = on_state
        self.on_connect: list[Callable[[], None]] = []
        self.client_id = config.client_id or default_client_id()
        self._rng = rng or random.Random()
        self._backoff = RetryPolicy(initial_s=config.reconnect_min_s, max_s=config.reconnect_max_s, jitter=0.5)
        self._ssl = tls_context(config)
        self._conn: MqttConnection | None = None
        self._topics: dict[bytes, tuple[str, str, str]] = {}
        self._inflight = InFlight()
        # the reports accepted so far from the current socket read, and their packet ids
        self._batch: list[Received] = []
        self._pids: list[int] = []
        self._arrival = 0
        self._stopping = False
        self._redeliver = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.up_filter = f"$share/{config.share_group}/{UP_FILTER}" if config.share_group else UP_FILTER
        # observation
        self.progress_at = time.monotonic()
        self.connects = 0
        self.last_error: str | None = None
        self.unacked_failures = 0
        self.subscribed = asyncio.Event()  # set while connected and subscribed

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-ingest")

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            self.progress_at = time.monotonic()
            try:
                conn = await self._connect()
            except (OSError, MqttError, asyncio.TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                delay = self._backoff.delay(attempt, None, self._rng)
                attempt += 1
                log.warning("broker connection failed", extra=fields(
                    broker=f"{self.config.host}:{self.config.port}", error=self.last_error, retry_s=round(delay, 2)))
                await self._sleep(delay)
                continue
            attempt = 0
            await self._serve(conn)

    async def _connect(self) -> MqttConnection:
        c = self.config
        options = ConnectOptions(self.client_id, keepalive_s=c.keepalive_s, session_expiry_s=c.session_expiry_s,
                                 receive_maximum=c.receive_maximum, max_packet=c.max_packet,
                                 username=c.username, password=c.password)
        # The handlers are bound to this connection before it connects: with a stored session the broker
        # sends queued reports right after CONNACK, and each must be PUBACKed on the connection it came in
        # on, even before our subscriptions are confirmed (else it holds a slot of the broker's window).
        conn = MqttConnection(options, lambda *publish: self._received(conn, *publish),
                              on_read_end=lambda: self._read_end(conn))
        try:
            await conn.connect(c.host, c.port, ssl_context=self._ssl)
            await conn.subscribe([self.up_filter], qos=1)
            await conn.subscribe([STATE_FILTER], qos=0)
        except BaseException:
            conn.abort()
            raise
        self._conn = conn
        self.subscribed.set()
        self.connects += 1
        self.last_error = None
        log.info("broker connected", extra=fields(broker=f"{c.host}:{c.port}", client_id=self.client_id,
                                                  session_present=conn.session_present, subscription=self.up_filter))
        for hook in self.on_connect:
            hook()
        return conn

    async def _serve(self, conn: MqttConnection) -> None:
        """Until the connection ends (or must be dropped so unstored reports come again)."""
        self._redeliver.clear()
        redeliver: asyncio.Future[bool] = asyncio.ensure_future(self._redeliver.wait())
        try:
            while not conn.closed.done():
                self.progress_at = time.monotonic()
                await asyncio.wait([conn.closed, redeliver], timeout=1.0,  # type: ignore[type-var]
                                   return_when=asyncio.FIRST_COMPLETED)
                if redeliver.done() and not conn.closed.done():
                    log.warning("dropping the broker connection so unstored reports are sent again",
                                extra=fields(unacked=self.unacked_failures))
                    await asyncio.sleep(REDELIVER_AFTER_S)
                    conn.abort()
        finally:
            redeliver.cancel()
        if self._conn is conn:
            self._conn = None
            self.subscribed.clear()
        if not self._stopping:
            self.last_error = conn.close_reason
            log.warning("broker connection lost", extra=fields(error=conn.close_reason))
            await self._sleep(self._backoff.delay(0, None, self._rng))

    async def _sleep(self, delay: float) -> None:
        end = time.monotonic() + delay
        while not self._stopping and time.monotonic() < end:
            self.progress_at = time.monotonic()
            await asyncio.sleep(min(1.0, end - time.monotonic()))

    # --- the hot path -------------------------------------------------------------------------

    def _topic(self, topic: bytes) -> tuple[str, str, str]:
        entry = self._topics.get(topic)
        if entry is None:
            text = topic.decode("utf-8", "replace")
            parts = text.split("/")
            if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT:
                entry = (parts[3], parts[2], text)
            else:
                entry = ("", "", text)
            if len(self._topics) >= _TOPIC_CACHE:
                self._topics.clear()
            self._topics[topic] = entry
        return entry

    def _received(self, conn: MqttConnection, topic: bytes, payload: bytes, pid: int, dup: bool) -> None:
        leaf, device, text = self._topic(topic)
        if leaf == "state":
            if pid:
                conn.puback(pid)
            if self.on_state is not None and device:
                self.on_state(device, payload[:16].decode("utf-8", "replace"))
            return
        if not self._batch:
            self._arrival = time.time_ns()  # a read's reports all arrived at once
        report = self.verifier.check_mqtt(payload, device if leaf == "up" else "", text)
        if report is None:
            if pid:
                conn.puback(pid)
            return
        self._batch.append((report, payload, text, self._arrival))
        self._pids.append(pid)

    def _read_end(self, conn: MqttConnection) -> None:
        """Hand the reports accepted from this read to the spool, as one batch."""
        batch = self._batch
        if not batch:
            return
        pids = self._pids
        self._batch = []
        self._pids = []
        self._inflight.add(len(batch))
        self.verifier.store_many(batch, "mqtt", partial(self._stored, pids, conn))

    def _stored(self, pids: list[int], conn: MqttConnection, results: list[SubmitResult | None]) -> None:
        self._inflight.done(len(results))
        acks = []
        for pid, result in zip(pids, results):
            if result is None:
                self.unacked_failures += 1
                self._redeliver.set()
            elif pid:
                acks.append(pid)
        conn.puback_many(acks)

    # --- commands -----------------------------------------------------------------------------

    def reachable(self, device: str, source: str) -> bool:
        return self.connected

    async def send_command(self, device: str, source: str, message: bytes) -> None:
        """Publish a sealed command to the device's `down` topic at QoS 1; returns at the broker's PUBACK."""
        conn = self._conn
        if conn is None or not conn.is_open:
            raise MqttError("not connected to the broker")
        await conn.publish(down_topic(device), message, qos=1)

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop taking reports, let those received finish committing (and be PUBACKed), then DISCONNECT.

        The session stays on the broker: whatever arrives meanwhile waits there for the next start."""
        self._stopping = True
        conn = self._conn
        if conn is not None:
            conn.pause_reading()
        if not await self._inflight.drained():
            log.error("stopping with reports still uncommitted (not acknowledged: they will come again)",
                      extra=fields(count=self._inflight.count))
        if conn is not None:
            await asyncio.sleep(0)  # let the last PUBACKs be written
            await conn.disconnect()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("kerbline_mqtt_connected", "1 while the ingest is connected to the broker",
                                1 if self.connected else 0)
        yield CounterMetricFamily("kerbline_mqtt_connects", "Successful broker connections", self.connects)
        yield GaugeMetricFamily("kerbline_mqtt_committing", "Reports received and not yet committed",
                                self._inflight.count)
