"""Prometheus metrics for `/metrics`: one registry per running gateway (tests run several in a process).

Rare events (rejections) are a prometheus-client Counter. Per-report counts are plain integers
on `Metrics` that a collector reads at scrape time: at 20,000 reports/s a labelled Counter's lock and
lookups would be a measurable share of the hot path, an integer increment is not. Components with state
of their own (spool, upstream, devices, links, quarantine) register a `collect()` that builds gauges and
counters from that state when scraped.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.wire import Reason

LINKS = ("mqtt", "serial")
# `*_created` timestamp series double the output and tell an operator nothing here.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    """The gateway's metrics registry and its hot-path counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rejected = Counter("kerbline_rejected", "Messages refused, by reason and link", ["reason", "link"],
                                registry=self.registry)
        for reason in Reason:
            for link in LINKS:
                self.rejected.labels(reason.value, link)  # every series exists from the start, at 0
        # per-report counts, read at scrape time
        self.received = dict.fromkeys(LINKS, 0)
        self.stored = dict.fromkeys(LINKS, 0)
        self.refused = dict.fromkeys(LINKS, 0)  # verified but not stored (spool full or failing)
        self.register(self._reports)

    def register(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add a component's `collect()`; it is called on every scrape."""
        self.registry.register(_Callback(collect))

    def reject(self, reason: Reason, link: str) -> None:
        self.rejected.labels(reason.value, link).inc()

    def _reports(self) -> Iterable[Metric]:
        for name, counts, text in (
            ("kerbline_reports_received", self.received, "Messages received, by link"),
            ("kerbline_reports_stored", self.stored, "Reports committed to the spool, by link"),
            ("kerbline_reports_refused", self.refused,
             "Verified reports the spool did not store (full or failing), so not acknowledged"),
        ):
            family = CounterMetricFamily(name, text, labels=["link"])
            for link, value in counts.items():
                family.add_metric([link], value)
            yield family

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
