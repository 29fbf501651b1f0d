"""NGSI-LD sink against a real aiohttp server speaking the batch-upsert answers (201, 204, 207, 400)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.spool import Spool
from gateway.upstream import BatchConfig, SinkSpec
from gateway.upstream.httpclient import HttpEndpoint
from gateway.upstream.ngsild import DEFAULT_CONTEXT, NgsiLdSink, NgsiLdSinkConfig
from tests.harness.platform import Answer, Platform
from tests.harness.reports import BASE_TIME, bin_report, report
from tests.harness.upstream import FAST_RETRY, delivered_all, open_spool, running

RAW = b"cose message"
BIN = "urn:ngsi-ld:WasteContainer:bin-0042"
LAMP = "urn:ngsi-ld:Streetlight:lamp-0117"
T0 = "2025-11-28T16:00:00.000Z"


def ngsi_spec(url: str, tenant: str | None = None) -> SinkSpec:
    sink = NgsiLdSink(NgsiLdSinkConfig("ngsi", HttpEndpoint(url), tenant=tenant))
    return SinkSpec(sink, BatchConfig(window_s=0.05), FAST_RETRY)


def lamp_report(seq: int, *alarms: str):  # noqa: ANN201
    values = [("lux", 5), ("lamp", True), ("dim", 60), ("power", 35), ("volt", 230), ("curr", 152)]
    return report("lamp-0117", 4, seq, *values, *[("alarm", a) for a in alarms])


@pytest.fixture
async def spool(tmp_path: Path):  # noqa: ANN201
    async with open_spool(tmp_path) as spool:
        yield spool


async def test_upsert_of_waste_containers_and_streetlights(spool: Spool) -> None:
    await spool.submit(bin_report("bin-0042", 3, 17, 42), RAW)
    await spool.submit(lamp_report(1), RAW)
    await spool.submit(report("bin-0042", 3, 18, ("fill", 50), ("alarm", "fire"), time=BASE_TIME + 60), RAW)
    async with Platform(default=Answer(201, json.dumps([BIN, LAMP]))) as platform:
        async with running(spool, [ngsi_spec(platform.url, tenant="city")]):
            await delivered_all(spool)
        (got,) = platform.received
    assert (got.method, got.path, got.query) == ("POST", "/ngsi-ld/v1/entityOperations/upsert", {"options": "update"})
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Link"] == (f'<{DEFAULT_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
                                   'type="application/ld+json"')
    assert got.headers["NGSILD-Tenant"] == "city"
    assert got.key is not None
    bin_entity, lamp_entity = got.json()  # one entity per device: the bin's two reports are merged
    t17, t60 = "2025-11-28T16:00:17.000Z", "2025-11-28T16:01:00.000Z"
    assert bin_entity == {
        "id": BIN, "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": 0.5, "observedAt": t60},
        "temperature": {"type": "Property", "value": 21.5, "observedAt": t17, "unitCode": "CEL"},
        "status": {"type": "Property", "value": "burning", "observedAt": t60},
    }
    assert lamp_entity == {
        "id": LAMP, "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on", "observedAt": T0},
        "illuminanceLevel": {"type": "Property", "value": 0.6, "observedAt": T0},
        "powerConsumption": {"type": "Property", "value": 35, "observedAt": T0, "unitCode": "WTT"},
        "voltage": {"type": "Property", "value": 230, "observedAt": T0, "unitCode": "VLT"},
        "current": {"type": "Property", "value": 0.152, "observedAt": T0, "unitCode": "AMP"},
        "status": {"type": "Property", "value": "ok", "observedAt": T0},
    }


async def test_207_successes_advance_and_failed_entities_become_dead_letters(spool: Spool) -> None:
    await spool.submit(bin_report("bin-0042", 3, 17), RAW)
    await spool.submit(lamp_report(1, "lamp_fail"), RAW)
    problem = {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "title": "Bad request data",
               "status": 400, "detail": "current out of range"}
    result = {"success": [BIN], "errors": [{"entityId": LAMP, "error": problem}]}
    async with Platform() as platform:
        platform.answer(Answer(207, json.dumps(result)))
        async with running(spool, [ngsi_spec(platform.url)]) as upstream:
            await delivered_all(spool)
            await spool.submit(lamp_report(2), RAW)  # the next batch goes out as usual
            await delivered_all(spool)
        assert [r.status for r in platform.received] == [207, 204]
        first = platform.received[0].json()
    (letter,) = await spool.dead_letters("ngsi")
    assert letter["reason"] == "NGSI-LD entity refused: Bad request data"
    assert json.loads(letter["detail"]) == problem
    refused = json.loads(letter["payload"])
    assert refused == next(e for e in first if e["id"] == LAMP)
    assert refused["status"]["value"] == "defectiveLamp"
    stats = upstream.runners[0].stats
    assert (stats.batches, stats.dead_batches, stats.dead_letters, stats.retries) == (2, 0, 1, 0)


async def test_204_is_delivered_and_400_is_dead(spool: Spool) -> None:
    await spool.submit(bin_report("bin-0042", 3, 17), RAW)
    async with Platform() as platform:
        platform.answer(Answer(400, '{"type": "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"}'))
        async with running(spool, [ngsi_spec(platform.url)]):
            await delivered_all(spool)
            await spool.submit(bin_report("bin-0042", 3, 18), RAW)
            await delivered_all(spool)
        assert [r.status for r in platform.received] == [400, 204]
    (letter,) = await spool.dead_letters("ngsi")
    assert letter["reason"] == "HTTP 400" and "InvalidRequest" in letter["detail"]
    assert json.loads(letter["payload"])[0]["id"] == BIN


async def test_kind_from_readings_then_id_prefix_else_skipped(spool: Spool) -> None:
    await spool.submit(report("bin-0099", 1, 1, ("batt", 3600)), RAW)  # no bin reading: the id says bin
    await spool.submit(report("pump-0001", 1, 1, ("batt", 3600)), RAW)  # neither: skipped
    await spool.submit(report("pole-0001", 1, 1, ("lamp", False)), RAW)  # a light by its readings
    async with Platform() as platform:
        spec = ngsi_spec(platform.url)
        async with running(spool, [spec]):
            await delivered_all(spool)
        (got,) = platform.received
    assert [(e["id"], e["type"]) for e in got.json()] == [
        ("urn:ngsi-ld:WasteContainer:bin-0099", "WasteContainer"), ("urn:ngsi-ld:Streetlight:pole-0001", "Streetlight")]
    assert spec.sink.skipped_reports == 1  # type: ignore[attr-defined]
