"""MQTT upstream sink: each batch is one QoS 1 PUBLISH to a topic on another broker (a city's cluster).

A batch counts as delivered when the broker's PUBACK arrives (aiomqtt's `publish` waits for it). A
connection that fails is dropped and made again at the next attempt; the batcher's backoff paces that.
The body is the same JSON as the HTTP sink's, with the batch key inside, since MQTT 3.1.1 has no
headers.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from gateway.upstream.batch import Batch
from gateway.upstream.render import FORMATS
from gateway.upstream.sink import SendResult

log = logging.getLogger("gateway.upstream")


@dataclass(frozen=True)
class MqttSinkConfig:
    """Broker, topic and credentials (the password is never logged or shown). `tls` turns TLS on,
    verified against the system CAs or `ca_file`."""

    name: str
    host: str
    topic: str
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    format: str = "json"
    timeout_s: float = 10.0
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        if not self.topic or any(c in self.topic for c in "+#\x00"):
            raise ValueError(f"mqtt sink {self.name}: topic must be a plain topic name, got {self.topic!r}")
        if self.format not in FORMATS:
            raise ValueError(f"mqtt sink {self.name}: format must be one of {sorted(FORMATS)}")


class MqttSink:
    def __init__(self, config: MqttSinkConfig) -> None:
        self.name = config.name
        self.config = config
        self.reads, self._render, _ = FORMATS[config.format]
        self._client: aiomqtt.Client | None = None

    async def start(self) -> None:
        """Connect lazily at the first send, so a broker that is down does not hold up the gateway."""

    async def close(self) -> None:
        await self._disconnect()

    async def send(self, batch: Batch) -> SendResult:
        payload = self._render(batch)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                client = await self._connected()
                await client.publish(self.config.topic, payload, qos=1)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            await self._disconnect()
            return SendResult.retry(f"mqtt {self.config.host}:{self.config.port}: {type(exc).__name__}: {exc}")
        return SendResult.ok()

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            cfg = self.config
            tls = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None) if cfg.tls else None
            # Held before connecting, so a connect cut short (timeout) is still torn down by _disconnect.
            self._client = aiomqtt.Client(cfg.host, cfg.port, identifier=cfg.client_id or None,
                                          username=cfg.username, password=cfg.password, tls_context=tls,
                                          keepalive=cfg.keepalive_s, timeout=cfg.timeout_s)
            await self._client.__aenter__()
            log.info("sink %s: connected to mqtt %s:%d", self.name, cfg.host, cfg.port)
        return self._client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except (aiomqtt.MqttError, OSError) as exc:
                log.debug("sink %s: disconnect: %s", self.name, exc)
