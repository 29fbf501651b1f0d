"""A stand-in for the city's platform: a real aiohttp server on a free loopback port.

It records every request (headers, and the body as the server decoded it: aiohttp's server inflates a
`Content-Encoding: gzip` body, and `wire_length` keeps the size that crossed the socket; `ssl_context` serves HTTPS), checks the
bearer token when one is set (401 otherwise), and answers from a script: queued answers first, then
the default (204). Runs in the caller's event loop (tests, bench scripts, end-to-end runs).
"""
from __future__ import annotations

import asyncio
import asyncio.base_events
import json
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from aiohttp import web

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One request as the platform saw it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    wire_length: int | None
    status: int  # what the platform answered
    at: float  # loop time of arrival

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@dataclass(frozen=True)
class Answer:
    """What the platform answers; `delay_s` holds the answer back (to trip client timeouts)."""

    status: int = 204
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Platform:
    """`await Platform(token="t").start()`; `platform.url`; `platform.answer(Answer(503), ...)`."""

    def __init__(self, token: str | None = None, default: Answer = Answer(), port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.ssl_context = ssl_context
        self.default = default
        self.received: list[Received] = []
        self._script: deque[Answer] = deque()
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()
        self.port = port

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{HOST}:{self.port}"

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests (after them, `default`)."""
        self._script.extend(answers)

    async def start(self) -> Platform:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Platform:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until `count` requests have arrived in total."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    def accepted(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.received if 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            answer = Answer(401, '{"error": "bad token"}')
        else:
            answer = self._script.popleft() if self._script else self.default
        self.received.append(Received(request.method, request.path, dict(request.query), dict(request.headers),
                                      body, request.content_length, answer.status,
                                      asyncio.get_running_loop().time()))
        self._arrived.set()
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(status=answer.status, text=answer.body or None, headers=answer.headers,
                            content_type="application/json" if answer.body else None)
