"""The MQTT link, device side: the flash queue's reports out on `up`, commands in from `down`.

Same shape as the serial link: the application calls `poll(now)` from its main loop and it returns at
once. Reports go out oldest first as QoS 1 PUBLISHes, at most the client's window (4) in flight; a
report leaves the flash queue only when the broker's PUBACK for it arrives (`FlashQueue.ack_one`) — on
MQTT the PUBACK is the acknowledgement the serial link gets from the gateway's `ack`, because the gateway
holds a persistent session on the broker and acks the broker only after its own spool commit.
Resending after a lost PUBACK or a reconnect is the client's (with DUP); a reboot forgets the packet ids,
so the queue's reports simply go out again and the gateway drops the (boot, seq) it already has.

Commands arrive on `kerbline/v1/{dev}/down` and pass the same `Downlink` gate as on the serial link
(tag, kid, shape, replay) before they reach the application.
"""
from kerbline.compat import const
from kerbline.links.mqtt import Client

WINDOW = const(4)  # reports in flight, as on the serial link


class MqttLink:
    def __init__(self, client, downlink, queue, handler):
        self.client = client
        self.downlink = downlink
        self.queue = queue
        self.handler = handler
        self._flight = {}  # packet id -> (boot, seq)
        self.sent = 0
        self.acked = 0
        self._said = None  # the client error last logged
        client.on_ack = self._on_ack
        client.on_message = self._on_message

    def in_flight(self):
        """(boot, seq) of the reports published and not yet acked."""
        return list(self._flight.values())

    def poll(self, now):
        """Run the client (connect, read, keepalive, resend), then hand it what the window has room for."""
        client = self.client
        client.poll(now)
        if client.error is not self._said:  # each failure once on the console, with when it retries
            self._said = client.error
            if client.error is not None:
                self.handler.log("mqtt: %r; retry in %d ms" % (client.error, client.next_retry_ms(now) or 0))
        flight = self._flight
        if len(flight) >= WINDOW or len(self.queue) <= len(flight):
            return
        for boot, seq, _alarm, message in self.queue.peek(WINDOW + len(flight)):
            if (boot, seq) in flight.values():
                continue
            pid = client.publish(message)
            if not pid:  # window full (or down and full): the report stays queued
                break
            flight[pid] = (boot, seq)
            self.sent += 1
            if len(flight) >= WINDOW:
                break

    def close(self):
        self.client.close()

    def _on_ack(self, pid):
        entry = self._flight.pop(pid, None)
        if entry is not None and self.queue.ack_one(entry[0], entry[1]):
            self.acked += 1

    def _on_message(self, topic, payload):
        self.downlink.handle(payload, self.handler)


def open_mqtt(cfg, downlink, queue, handler):
    """The MQTT link for the device config `cfg` (its `link` section: host, port, tls, password, ...)."""
    link = cfg["link"]
    context = None
    if link["tls"]:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile="ca.pem")  # the broker's CA, written at provisioning
    client = Client(
        cfg["id"],
        link["host"],
        port=link["port"],
        password=link.get("password"),
        keepalive=link["keepalive"],
        window=WINDOW,
        clean=False,  # commands queued while the device slept or was offline are delivered on connect
        ssl=context,
    )
    return MqttLink(client, downlink, queue, handler)
