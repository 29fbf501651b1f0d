"""HTTP sink against a real aiohttp server: retries with stable keys, Retry-After, dead letters, gzip,
bearer token, timeouts, TLS verification, SenML-JSON."""
from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from gateway.spool import Spool
from gateway.upstream import BatchConfig, SinkSpec
from gateway.upstream.httpclient import HttpEndpoint, parse_retry_after
from gateway.upstream.http import HttpSink, HttpSinkConfig
from tests.harness.platform import Answer, Platform
from tests.harness.reports import BASE_TIME, bin_report, report
from tests.harness.upstream import FAST_RETRY, delivered_all, eventually, open_spool, running

RAW = b"cose message"


def http_spec(url: str, *, max_records: int = 8, window_s: float = 0.05, **sink: object) -> SinkSpec:
    endpoint_keys = {"token", "ca_file", "verify_tls", "timeout_s"}
    endpoint = HttpEndpoint(url + "/ingest", **{k: v for k, v in sink.items() if k in endpoint_keys})  # type: ignore[arg-type]
    config = HttpSinkConfig("http", endpoint, **{k: v for k, v in sink.items() if k not in endpoint_keys})  # type: ignore[arg-type]
    return SinkSpec(HttpSink(config), BatchConfig(max_records=max_records, window_s=window_s), FAST_RETRY)


async def submit_bins(spool: Spool, count: int, device: str = "bin-0042", boot: int = 1) -> None:
    for seq in range(1, count + 1):
        await spool.submit(bin_report(device, boot, seq), RAW)


def reading_ids(platform: Platform) -> list[tuple[str, int, int]]:
    return [(r["device"], r["boot"], r["seq"]) for req in platform.accepted() for r in req.json()["readings"]]


@pytest.fixture
async def spool(tmp_path: Path):  # noqa: ANN201
    async with open_spool(tmp_path) as spool:
        yield spool


async def test_5xx_then_recovery_drains_in_order_with_the_same_keys(spool: Spool) -> None:
    await submit_bins(spool, 12)  # 48 readings: 6 batches of 8
    async with Platform() as platform:
        platform.answer(Answer(503), Answer(500), Answer(502, "bad gateway"))
        async with running(spool, [http_spec(platform.url)]) as upstream:
            await delivered_all(spool)
        got = platform.received
    assert [r.status for r in got] == [503, 500, 502] + [204] * 6
    assert len({r.key for r in got[:4]}) == 1  # three retries of the first batch under one key
    assert len({r.body for r in got[:4]}) == 1
    accepted = platform.accepted()
    assert len({r.key for r in accepted}) == 6
    assert all(r.json()["batch"] == r.key for r in accepted)
    assert reading_ids(platform) == [("bin-0042", 1, seq) for seq in range(1, 13) for _ in range(4)]
    stats = upstream.runners[0].stats
    assert (stats.batches, stats.reports, stats.records, stats.retries) == (6, 12, 48, 3)


async def test_429_retry_after_is_honoured(spool: Spool) -> None:
    await submit_bins(spool, 2)
    async with Platform() as platform:
        platform.answer(Answer(429, headers={"Retry-After": "1"}))
        async with running(spool, [http_spec(platform.url)]):
            await delivered_all(spool)
        first, second = platform.received
    assert (first.status, second.status, first.key) == (429, 204, second.key)
    assert second.at - first.at >= 0.95  # the backoff alone would have waited 10 ms


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_other_4xx_goes_to_the_dead_letters_and_delivery_goes_on(spool: Spool) -> None:
    await submit_bins(spool, 6)
    async with Platform() as platform:
        platform.answer(Answer(422, '{"error": "bad reading"}'))
        async with running(spool, [http_spec(platform.url)]) as upstream:
            await delivered_all(spool)
        got = platform.received
    assert [r.status for r in got] == [422, 204, 204]
    assert len({r.key for r in got}) == 3  # the refused batch was not sent again
    (letter,) = await spool.dead_letters("http")
    assert (letter["reason"], letter["batch_key"]) == ("HTTP 422", got[0].key)
    assert "bad reading" in letter["detail"]
    assert letter["payload"].encode() == got[0].body
    assert reading_ids(platform) == [("bin-0042", 1, seq) for seq in range(3, 7) for _ in range(4)]
    assert upstream.runners[0].stats.dead_batches == 1


async def test_body_is_gzip_and_the_bearer_token_is_checked(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    await submit_bins(spool, 4)
    async with Platform(token="s3cret-token") as platform:
        async with running(spool, [http_spec(platform.url, token="s3cret-token", max_records=100)]):
            await delivered_all(spool)
        (got,) = platform.received
    assert got.status == 204
    assert got.headers["Content-Encoding"] == "gzip"
    assert got.headers["Content-Type"] == "application/json"
    assert got.wire_length is not None and got.wire_length < len(got.body)  # compressed on the wire
    assert len(got.json()["readings"]) == 16
    assert "s3cret-token" not in caplog.text


async def test_a_refused_token_is_retried_not_dead_lettered(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    await submit_bins(spool, 1)
    async with Platform(token="right") as platform:
        sink = http_spec(platform.url, token="wrong")
        assert "wrong" not in repr(sink.sink.config)  # type: ignore[attr-defined]
        async with running(spool, [sink]) as upstream:
            await eventually(lambda: len(platform.received) >= 3)
            assert upstream.health().degraded and "HTTP 401" in upstream.health().reasons[0]
        assert {r.status for r in platform.received} == {401}
    assert await spool.dead_letters() == []
    assert spool.stats().reports == 1
    assert "wrong" not in caplog.text


async def test_an_answer_slower_than_the_timeout_is_retried(spool: Spool) -> None:
    await submit_bins(spool, 1)
    async with Platform() as platform:
        platform.answer(Answer(204, delay_s=0.6))
        async with running(spool, [http_spec(platform.url, timeout_s=0.1)]) as upstream:
            await delivered_all(spool)
        first, second = platform.received
    assert first.key == second.key
    assert upstream.runners[0].stats.retries == 1


async def test_a_platform_that_is_down_gets_the_batch_when_it_comes_up(spool: Spool) -> None:
    await submit_bins(spool, 2)
    platform = Platform()
    await platform.start()
    port = platform.port
    await platform.stop()  # nothing listens on the port now: connections are refused
    async with running(spool, [http_spec(f"http://127.0.0.1:{port}")]) as upstream:
        await eventually(lambda: upstream.runners[0].stats.retries >= 2)
        assert "no answer" in (upstream.runners[0].stats.last_error or "")
        async with Platform(port=port) as platform:
            await delivered_all(spool)
    assert len(platform.received) == 1 and len(platform.received[0].json()["readings"]) == 8


async def test_senml_json_format(spool: Spool) -> None:
    await spool.submit(report("lamp-0117", 2, 9, ("lux", 310), ("lamp", True), ("alarm", "lamp_fail")), RAW)
    async with Platform() as platform:
        async with running(spool, [http_spec(platform.url, format="senml", gzip_level=0)]):
            await delivered_all(spool)
        (got,) = platform.received
    assert got.headers["Content-Type"] == "application/senml+json" and "Content-Encoding" not in got.headers
    assert got.json() == [
        {"bn": "lamp-0117:", "bt": BASE_TIME, "n": "lux", "v": 310, "u": "lx", "boot": 2, "seq": 9},
        {"n": "lamp", "vb": True, "boot": 2, "seq": 9},
        {"n": "alarm", "vs": "lamp_fail", "boot": 2, "seq": 9},
    ]


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 it signed (openssl CLI)."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=Kerbline test CA"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):
        subprocess.run([str(c) for c in command], check=True, capture_output=True)
    return ca, cert, key


async def test_tls_is_verified_against_the_configured_ca(tmp_path: Path, spool: Spool) -> None:
    ca, cert, key = make_certificates(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    await submit_bins(spool, 1)
    async with Platform(ssl_context=server_tls) as platform:
        # The system CAs do not know the test CA: refused before any request is made.
        async with running(spool, [http_spec(platform.url)]) as upstream:
            await eventually(lambda: upstream.runners[0].stats.retries >= 1)
            assert "certificate" in (upstream.runners[0].stats.last_error or "").lower()
        assert platform.received == []
        async with running(spool, [http_spec(platform.url, ca_file=ca)]):
            await delivered_all(spool)
        assert len(platform.received) == 1
        await submit_bins(spool, 2, boot=2)
        async with running(spool, [http_spec(platform.url, verify_tls=False)]):
            await delivered_all(spool)
        assert len(platform.received) == 2
