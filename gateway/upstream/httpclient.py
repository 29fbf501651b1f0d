"""What the HTTP and NGSI-LD sinks share: the endpoint settings, the aiohttp session (TLS, bearer token,
timeouts) and how an HTTP answer becomes ok, retry or dead."""
from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import aiohttp

from gateway.upstream.sink import SendResult

# 4xx statuses that say "later", not "never": timeout, too early, rate limit; and the gateway's own
# credentials refused (401, 403), which the operator fixes in the config while the batch waits: the
# same batch goes through afterwards, so dead-lettering it would throw good data away.
_RETRIED_4XX = frozenset({401, 403, 408, 425, 429})
_DETAIL_LIMIT = 4096


@dataclass(frozen=True)
class HttpEndpoint:
    """A platform endpoint. The token is sent as `Authorization: Bearer` and never logged or shown.
    TLS is verified against the system CAs, or `ca_file` when given; `verify_tls=False` is for labs."""

    url: str
    token: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint url must start with http:// or https://, got {self.url!r}")
        if self.timeout_s <= 0:
            raise ValueError("endpoint timeout_s must be > 0")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: str


class HttpClient:
    """One aiohttp session per sink: kept-alive connections, verified TLS, a total timeout per request."""

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        ep = self.endpoint
        tls: ssl.SSLContext | bool
        if not ep.verify_tls:
            tls = False
        else:
            tls = ssl.create_default_context(cafile=str(ep.ca_file) if ep.ca_file else None)
        headers = {"Authorization": f"Bearer {ep.token}"} if ep.token else {}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=4),
            timeout=aiohttp.ClientTimeout(total=ep.timeout_s),
            headers=headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer | SendResult:
        """POST once: the answer, or a retry result when no answer came (refused, reset, timed out)."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                text = await response.text(errors="replace")
                return Answer(response.status, response.headers, text)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return SendResult.retry(f"no answer from {self.endpoint.url}: {type(exc).__name__}: {exc}")


def classify_failure(answer: Answer, payload: str) -> SendResult:
    """A non-2xx answer: 5xx, 401, 403, 408, 425 and 429 are retried (Retry-After honoured); any other
    status (400, 404, 413, 422, a redirect...) is refused for good, the answer kept in the dead letter."""
    status = answer.status
    reason = f"HTTP {status}"
    if status >= 500 or status in _RETRIED_4XX:
        return SendResult.retry(reason, parse_retry_after(answer.headers.get("Retry-After")))
    return SendResult.dead(reason, answer.body[:_DETAIL_LIMIT], payload)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
