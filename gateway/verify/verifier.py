"""Step 2 of the pipeline: every message is checked, refused with a reason, or handed to the spool.

`check_mqtt` / `check_serial` run the wire checks in the documented order (size, envelope, kid vs topic
on MQTT, registry, MAC in constant time, payload, shape) synchronously, in the link's read callback.
A refusal is counted (`kerbline_rejected{reason, link}`), logged with the device it claims to come
from (rate-limited, see rejections.py) and its raw bytes go to the quarantine.

`store_many` settles the time of each report of a batch (gateway.timebase; a batch is what one read of
the link yielded), submits them to the spool as one batch and calls back once with the spool's answers,
in order, once the group commit is on disk: STORED and DUPLICATE
may be acknowledged; None (spool full or failing) must not be. Dedup on (device, boot, seq) is the
spool's, persisted with the reports in the same transaction, so a report resent after a gateway crash is
recognised. A duplicate is counted under the reason `duplicate` but not quarantined: it is the normal
outcome of at-least-once delivery.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from gateway.logging import fields
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.spool import Spool, SpoolError, Submission, SubmitResult
from gateway.timebase import Timebase
from gateway.verify.quarantine import Quarantine
from gateway.verify.rejections import RejectionLog
from gateway.wire import Reason, Rejected, Report, parse_report, verify

log = logging.getLogger("gateway.verify")

# observer(report, link, source, time_s, time_estimated, arrival_ns): called for every stored report
Observer = Callable[[Report, str, str, float, bool, int], None]
# done(results): the answers for a batch given to `store_many`, in its order
BatchDone = Callable[[list[SubmitResult | None]], None]
# (report, raw message, source, arrival_ns): a verified report as a link hands it over
Received = tuple[Report, bytes, str, int]


class Verifier:
    def __init__(self, registry: Registry, spool: Spool, quarantine: Quarantine, metrics: Metrics,
                 timebase: Timebase, rejections: RejectionLog, commit_delay_s: float = 0.0) -> None:
        self.registry = registry
        self.spool = spool
        self.quarantine = quarantine
        self.metrics = metrics
        self.timebase = timebase
        self.rejections = rejections
        self.commit_delay_s = commit_delay_s
        self.observers: list[Observer] = []
        self._kid: str | None = None  # the kid the last check looked up (the claimed sender)

    @property
    def last_kid(self) -> str | None:
        """The device the last refused message named in its kid, if the checks got that far."""
        return self._kid

    def _lookup(self, device_id: str) -> bytes | None:
        self._kid = device_id
        return self.registry.key(device_id)

    def check_mqtt(self, message: bytes, topic_device: str, topic: str) -> Report | None:
        """The report in a message published on `topic` (whose device level is `topic_device`), or None."""
        self.metrics.received["mqtt"] += 1
        self._kid = None
        try:
            device_id, payload = verify(message, self._lookup, topic_device)
            return parse_report(payload, device_id)
        except Rejected as rejection:
            self.reject(rejection, "mqtt", topic, message, topic_device or self._kid)
            return None

    def check_serial(self, message: bytes, port: str) -> Report | None:
        """The report in a message read from serial port `port`, or None (refused, already recorded)."""
        self.metrics.received["serial"] += 1
        self._kid = None
        try:
            device_id, payload = verify(message, self._lookup)
            return parse_report(payload, device_id)
        except Rejected as rejection:
            self.reject(rejection, "serial", port, message, self._kid)
            return None

    def reject(self, rejection: Rejected, link: str, source: str, raw: bytes, device: str | None) -> None:
        """Count, log and quarantine one refused message (also used for framing errors on serial)."""
        reason = rejection.reason
        self.metrics.reject(reason, link)
        self.rejections.record(reason.value, device, link, source, rejection.detail)
        self.quarantine.add(link, source, device, reason.value, rejection.detail, raw)

    def store_many(self, batch: list[Received], link: str, done: BatchDone) -> None:
        """Commit the reports of `batch`, then call `done(results)`: STORED/DUPLICATE for each one durable,
        None for each not stored. On the hot path this is one future and one callback per batch, no task."""
        settle = self.timebase.settle
        submissions: list[Submission] = []
        for report, raw, _, arrival_ns in batch:
            time_s, estimated = settle(report, arrival_ns)
            submissions.append((report, raw, arrival_ns, time_s, estimated))
        if self.commit_delay_s:
            pending: Awaitable[list[SubmitResult]] = self._delayed(submissions)
        else:
            try:
                pending = self.spool.submit_many(submissions)
            except SpoolError as exc:
                self._none_stored(submissions, link, exc, done)
                return
        future = pending if isinstance(pending, asyncio.Future) else asyncio.ensure_future(pending)
        future.add_done_callback(partial(self._committed, submissions, batch, link, done))

    async def _delayed(self, submissions: list[Submission]) -> list[SubmitResult]:
        await asyncio.sleep(self.commit_delay_s)
        return await self.spool.submit_many(submissions)

    def _none_stored(self, submissions: list[Submission], link: str, exc: BaseException, done: BatchDone) -> None:
        for submission in submissions:
            self._not_stored(submission[0], link, exc)
        done([None] * len(submissions))

    def _not_stored(self, report: Report, link: str, exc: BaseException) -> None:
        self.metrics.refused[link] += 1
        log.error("report not stored", extra=fields(device=report.device, boot=report.boot, seq=report.seq,
                                                    link=link, error=str(exc) or type(exc).__name__))

    def _committed(self, submissions: list[Submission], batch: list[Received], link: str, done: BatchDone,
                   future: asyncio.Future[list[SubmitResult]]) -> None:
        exc = asyncio.CancelledError() if future.cancelled() else future.exception()
        if exc is not None:
            self._none_stored(submissions, link, exc, done)
            return
        stored, observers = SubmitResult.STORED, self.observers
        answers: list[SubmitResult | None] = []
        count = 0
        for (report, _, arrival_ns, time_s, estimated), (_, _, source, _), result in zip(submissions, batch,
                                                                                           future.result()):
            if result is stored:  # the usual answer, handled here rather than in a call per report
                count += 1
                for observer in observers:
                    observer(report, link, source, time_s, estimated, arrival_ns)
                answers.append(result)
            else:
                answers.append(self._not_new(report, link, source, result))
        self.metrics.stored[link] += count
        done(answers)

    def _not_new(self, report: Report, link: str, source: str, result: SubmitResult) -> SubmitResult | None:
        """Count one committed report the spool did not store as new; the result to act on (None: do not
        acknowledge)."""
        if result is SubmitResult.DUPLICATE:
            self.metrics.reject(Reason.DUPLICATE, link)
            self.rejections.record(Reason.DUPLICATE.value, report.device, link, source,
                                   f"boot {report.boot} seq {report.seq} already stored", logging.INFO)
            return result
        self.metrics.refused[link] += 1
        log.error("report refused: spool full of alarms", extra=fields(
            device=report.device, boot=report.boot, seq=report.seq, link=link))
        return None

