"""A device's network between it and the broker: a TCP relay on a loopback port that can be cut.

A faithful MQTT device connects to its own relay port instead of the broker's (its config's link host and
port), and the relay carries the bytes to the broker. `cut()` is the device's network going down (a WiFi
access point rebooting, a backhaul outage): every open connection through the relay is aborted on both
sides (the broker sees the device vanish and publishes its will; the device's next read or keepalive
fails), and new connections are refused until `restore()`. What the broker's restarts do is not this
relay's business: a connection the broker drops is passed on as a close to the device.

Bounds: each direction of a connection uses asyncio's stream flow control (a slow reader pauses the
other side's reads), so nothing grows without bound; `max_connections` connections at once (a device
needs one; more are refused and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.links.tap import MqttTap

CHUNK = 4096


@dataclass
class NetStats:
    connections: int = 0
    refused: int = 0  # attempts while cut, or over max_connections
    cuts: int = 0
    up_bytes: int = 0
    down_bytes: int = 0


class NetLink:
    """The relay of one device: `port` (after `start()`) is what the device connects to."""

    def __init__(self, name: str, broker_host: str, broker_port: int, host: str = "127.0.0.1",
                 max_connections: int = 4, tap: MqttTap | None = None) -> None:
        self.name = name
        self.tap = tap  # sees both directions of every connection
        self.host = host
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.max_connections = max_connections
        self.stats = NetStats()
        self.up = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)

    def cut(self) -> None:
        """The network goes down: abort every connection, refuse new ones."""
        if not self.up:
            return
        self.up = False
        self.stats.cuts += 1
        for task in list(self._tasks):
            task.cancel()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up or len(self._tasks) >= self.max_connections:
            self.stats.refused += 1
            _abort(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        conn = self.stats.connections
        broker_writer: asyncio.StreamWriter | None = None
        if self.tap is not None:
            self.tap.opened(conn)
        try:
            try:
                broker_reader, broker_writer = await asyncio.open_connection(self.broker_host, self.broker_port)
            except OSError:  # broker down: the device sees its connection refused, as it would
                return
            up = asyncio.ensure_future(self._pump(reader, broker_writer, "up_bytes", conn))
            down = asyncio.ensure_future(self._pump(broker_reader, writer, "down_bytes", conn))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                up.cancel()
                down.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # cut(): both sides are aborted below
        finally:
            if self.tap is not None:
                self.tap.closed(conn)
            self._tasks.discard(task)
            _abort(writer)
            if broker_writer is not None:
                _abort(broker_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str,
                    conn: int) -> None:
        watch = None if self.tap is None else (self.tap.up if counter == "up_bytes" else self.tap.down)
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                if watch is not None:
                    watch(conn, data)
                writer.write(data)
                setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once, without waiting for buffered bytes: a cut loses what was in flight."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
