"""The gateway's local HTTP API (aiohttp), on 127.0.0.1:8080 by default.

Open (read-only, for monitoring on the box):
- `GET /metrics`: Prometheus text format.
- `GET /healthz`: 200 `{"status": "ok"}`, or 503 `{"status": "degraded", "reasons": [...]}`.
- `GET /devices`, `GET /devices/{id}`: device state (no keys, ever).
- `GET /links`: the MQTT connection and every serial port, with its device and state.

Behind `Authorization: Bearer <http.token>` (compared in constant time; with no token configured these
answer 403, so an unconfigured gateway never takes commands):
- `POST /devices/{id}/commands` with `{"op": "config"|"time"|"reboot"|"ping", "args": {...}}`:
  202 and the command with its status; 400 for a command the device would refuse, 404 for an unknown
  device, 409 when the device already has its maximum of open commands.
- `GET /devices/{id}/commands`, `GET /devices/{id}/commands/{n}`: delivery status.
- `GET /quarantine?limit=&device=&reason=`: refused frames, newest first, raw bytes in hex.

Request bodies are capped at `MAX_BODY` bytes.
"""
from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.config import HttpSection
from gateway.devices import CommandRefused, TooManyCommands
from gateway.logging import fields

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger("gateway.http")

MAX_BODY = 16 * 1024
MAX_LIST = 1000


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":"), default=str), status=status,
                        content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class HttpApi:
    def __init__(self, gateway: Gateway, config: HttpSection) -> None:
        self.gateway = gateway
        self.config = config
        self._token = config.token.encode() if config.token else None
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.add_routes([
            web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz),
            web.get("/devices", self.devices),
            web.get("/devices/{device}", self.device),
            web.get("/links", self.links),
            web.post("/devices/{device}/commands", self.post_command),
            web.get("/devices/{device}/commands", self.list_commands),
            web.get("/devices/{device}/commands/{id}", self.get_command),
            web.get("/quarantine", self.quarantine),
        ])
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server  # the bound port when the config asked for 0 (tests)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info("http api listening", extra=fields(host=self.config.host, port=self.port))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- open endpoints -----------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.gateway.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(self, request: web.Request) -> web.Response:
        health = self.gateway.health()
        if health.degraded:
            return _json({"status": "degraded", "reasons": list(health.reasons)}, 503)
        return _json({"status": "ok"})

    async def devices(self, request: web.Request) -> web.Response:
        return _json({"devices": self.gateway.devices.devices()})

    async def device(self, request: web.Request) -> web.Response:
        state = self.gateway.devices.public(request.match_info["device"])
        return _json(state) if state is not None else _error(404, "no such device")

    async def links(self, request: web.Request) -> web.Response:
        gw = self.gateway
        mqtt = None
        if gw.mqtt is not None:
            mqtt = {"broker": f"{gw.config.mqtt.host}:{gw.config.mqtt.port}", "connected": gw.mqtt.connected,
                    "client_id": gw.mqtt.client_id, "subscription": gw.mqtt.up_filter,
                    "connects": gw.mqtt.connects, "last_error": gw.mqtt.last_error}
        return _json({"mqtt": mqtt, "serial": gw.serial.public() if gw.serial is not None else []})

    # --- token endpoints ----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None when the request carries the token, else the refusal to send."""
        if self._token is None:
            return _error(403, "no http.token configured: the command and quarantine endpoints are off")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="kerbline"'},
                                text='{"error":"bearer token required"}', content_type="application/json")
        return None

    async def post_command(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        device = request.match_info["device"]
        if device not in self.gateway.registry:
            return _error(404, "no such device")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("op"), str) or set(body) - {"op", "args"}:
            return _error(400, 'body must be {"op": ..., "args": {...}}')
        args = body.get("args", {})
        if not isinstance(args, dict):
            return _error(400, "args must be an object")
        try:
            entry = self.gateway.devices.submit_command(device, body["op"], args)
        except TooManyCommands as exc:
            return _error(409, str(exc))
        except CommandRefused as exc:
            return _error(400, str(exc))
        return _json(entry.public(), 202)

    async def list_commands(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        return _json({"commands": self.gateway.commands.list(request.match_info["device"])})

    async def get_command(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        try:
            command_id = int(request.match_info["id"])
        except ValueError:
            return _error(404, "no such command")
        entry = self.gateway.commands.get(request.match_info["device"], command_id)
        return _json(entry.public()) if entry is not None else _error(404, "no such command")

    async def quarantine(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        try:
            limit = min(int(request.query.get("limit", "100")), MAX_LIST)
        except ValueError:
            return _error(400, "limit must be an integer")
        frames = self.gateway.quarantine.list(limit, request.query.get("device"), request.query.get("reason"))
        return _json({"frames": frames, "held": len(self.gateway.quarantine),
                      "evicted": self.gateway.quarantine.evicted})
