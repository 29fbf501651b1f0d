"""NGSI-LD sink: a batch becomes one batch upsert of FIWARE WasteContainer and Streetlight entities.

`POST {base}/ngsi-ld/v1/entityOperations/upsert?options=update` (ETSI GS CIM 009): entities that exist
get the attributes sent replaced, the others are created. 201 (some created) and 204 (all updated) mean
every entity is in; 207 carries a BatchOperationResult, `{"success": [ids], "errors": [{"entityId",
"error": ProblemDetails}]}`: the successes count as delivered and each failed entity goes to the
dead-letter table with its error, so one bad entity never blocks the others or is retried forever.

An upsert carries state, not history: a device with several reports in one batch becomes one entity
holding the latest value of each attribute (each with its own `observedAt`).

Mapping (FIWARE smart data models, dataModel.WasteManagement and dataModel.Streetlighting):
- bin -> `urn:ngsi-ld:WasteContainer:{device}`: fillingLevel = fill/100 (0..1), temperature (CEL),
  status (enum ok, lidOpen, dropped, burning...): fire -> burning, tilt -> dropped, lid open -> lidOpen,
  else ok. A full bin is not a status in the model; its fillingLevel says it.
- light -> `urn:ngsi-ld:Streetlight:{device}`: powerState on/off (lamp), illuminanceLevel = dim/100
  (the model's relative level 0..1), powerConsumption (W, WTT), voltage (V, VLT), current (A, AMP),
  status defectiveLamp on a lamp_fail alarm, else ok.
The kind comes from the readings (fill/dist/lid/tilt: bin; lux/lamp/dim/power/volt/curr/energy: light),
else from the id prefix (`bin-`, `lamp-`); a report that fits neither is skipped and counted.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gateway.spool import DeadLetter, ReadMode, StoredReport
from gateway.wire.model import Reading
from gateway.upstream.batch import Batch
from gateway.upstream.httpclient import Answer, HttpClient, HttpEndpoint, classify_failure
from gateway.upstream.render import compact_json, reading_time
from gateway.upstream.sink import SendResult

log = logging.getLogger("gateway.upstream")

UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert?options=update"
DEFAULT_CONTEXT = "https://smartdatamodels.org/context.jsonld"

WASTE_CONTAINER = "WasteContainer"
STREETLIGHT = "Streetlight"
_BIN_NAMES = frozenset({"fill", "dist", "lid", "tilt"})
_LIGHT_NAMES = frozenset({"lux", "lamp", "dim", "power", "volt", "curr", "energy"})
_PREFIXES = {"bin-": WASTE_CONTAINER, "lamp-": STREETLIGHT}


@dataclass(frozen=True)
class NgsiLdSinkConfig:
    """`endpoint.url` is the broker's base URL (e.g. http://orion:1026); `context` is sent in the Link
    header; `tenant` becomes the NGSILD-Tenant header when set."""

    name: str
    endpoint: HttpEndpoint
    context: str = DEFAULT_CONTEXT
    tenant: str | None = None


def entity_type(report: StoredReport) -> str | None:
    names = {r.name for r in report.readings}
    if names & _BIN_NAMES:
        return WASTE_CONTAINER
    if names & _LIGHT_NAMES:
        return STREETLIGHT
    for prefix, kind in _PREFIXES.items():
        if report.device.startswith(prefix):
            return kind
    return None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _prop(value: Any, observed: str, unit_code: str | None = None) -> dict[str, Any]:
    prop = {"type": "Property", "value": value, "observedAt": observed}
    if unit_code is not None:
        prop["unitCode"] = unit_code
    return prop


# WasteContainer status values we set, by precedence (the worst condition in a report wins).
_BIN_STATUS_RANK = {"ok": 0, "lidOpen": 1, "dropped": 2, "burning": 3}


def _bin_status(r: Reading) -> str | None:
    if r.name == "alarm":
        return {"fire": "burning", "tilt": "dropped"}.get(str(r.value))
    if r.value is True:
        return {"tilt": "dropped", "lid": "lidOpen"}.get(r.name)
    return None


def _number(reading: Reading) -> float | int | None:
    value = reading.value
    return None if isinstance(value, (bool, str)) else value


def _ratio(percent: float | int) -> float:
    """A /100 reading as the models' 0..1 level, held to that range."""
    return min(max(percent / 100, 0.0), 1.0)


def _bin_attributes(report: StoredReport, attrs: dict[str, Any]) -> None:
    status, status_at = "ok", _iso(report.time)
    for r in report.readings:
        at = _iso(reading_time(report, r))
        value = _number(r)
        if r.name == "fill" and value is not None:
            attrs["fillingLevel"] = _prop(_ratio(value), at)
        elif r.name == "temp" and value is not None:
            attrs["temperature"] = _prop(value, at, "CEL")
        condition = _bin_status(r)
        if condition is not None and _BIN_STATUS_RANK[condition] > _BIN_STATUS_RANK[status]:
            status, status_at = condition, at
    attrs["status"] = _prop(status, status_at)


def _light_attributes(report: StoredReport, attrs: dict[str, Any]) -> None:
    status = "ok"
    for r in report.readings:
        at = _iso(reading_time(report, r))
        value = _number(r)
        if r.name == "lamp" and isinstance(r.value, bool):
            attrs["powerState"] = _prop("on" if r.value else "off", at)
        elif r.name == "alarm" and r.value == "lamp_fail":
            status = "defectiveLamp"
        elif value is None:
            continue
        elif r.name == "dim":
            attrs["illuminanceLevel"] = _prop(_ratio(value), at)
        elif r.name == "power":
            attrs["powerConsumption"] = _prop(value, at, "WTT")
        elif r.name == "volt":
            attrs["voltage"] = _prop(value, at, "VLT")
        elif r.name == "curr":
            attrs["current"] = _prop(value / 1000, at, "AMP")
    attrs["status"] = _prop(status, _iso(report.time))


def entities(reports: tuple[StoredReport, ...]) -> tuple[list[dict[str, Any]], int]:
    """The entities for a batch (one per device, latest attribute values win) and the count of reports
    that map to no entity type."""
    by_id: dict[str, dict[str, Any]] = {}
    skipped = 0
    for report in reports:
        kind = entity_type(report)
        if kind is None:
            skipped += 1
            continue
        entity_id = f"urn:ngsi-ld:{kind}:{report.device}"
        entity = by_id.setdefault(entity_id, {"id": entity_id, "type": kind})
        (_bin_attributes if kind == WASTE_CONTAINER else _light_attributes)(report, entity)
    return list(by_id.values()), skipped


class NgsiLdSink:
    def __init__(self, config: NgsiLdSinkConfig) -> None:
        self.name = config.name
        self.config = config
        self.reads = ReadMode.REPORTS
        self.skipped_reports = 0
        self._client = HttpClient(config.endpoint)
        self._url = config.endpoint.url.rstrip("/") + UPSERT_PATH
        self._headers = {
            "Content-Type": "application/json",
            "Link": f'<{config.context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"',
        }
        if config.tenant:
            self._headers["NGSILD-Tenant"] = config.tenant

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: Batch) -> SendResult:
        batch_entities, skipped = entities(batch.reports)
        self.skipped_reports += skipped
        if not batch_entities:
            return SendResult.ok()
        body = compact_json(batch_entities)
        answer = await self._client.post(self._url, body.encode(), {**self._headers, "Idempotency-Key": batch.key})
        if not isinstance(answer, Answer):
            return answer
        if answer.status == 207:
            return self._partial(answer, batch_entities)
        if 200 <= answer.status < 300:
            return SendResult.ok()
        return classify_failure(answer, body)

    def _partial(self, answer: Answer, sent: list[dict[str, Any]]) -> SendResult:
        """207: dead-letter each entity named in `errors`, with its ProblemDetails."""
        try:
            result = json.loads(answer.body)
            errors = result["errors"]
            failed = {e["entityId"]: e.get("error", {}) for e in errors}
        except (ValueError, KeyError, TypeError):
            return SendResult.dead("NGSI-LD 207 without a BatchOperationResult", answer.body[:4096], compact_json(sent))
        by_id = {e["id"]: e for e in sent}
        dead = []
        for entity_id, error in failed.items():
            title = (error.get("title") or error.get("type")) if isinstance(error, dict) else None
            dead.append(DeadLetter(f"NGSI-LD entity refused: {title or 'error'}", compact_json(error),
                                   compact_json(by_id.get(entity_id, {"id": entity_id}))))
        return SendResult.ok(tuple(dead))
