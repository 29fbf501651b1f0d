"""The spool's Prometheus metrics, built from its state at scrape time (`Metrics.register(collector)`)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.spool.spool import Spool

_COUNTERS = (
    ("stored_reports", "kerbline_spool_stored_reports", "Reports committed"),
    ("stored_readings", "kerbline_spool_stored_readings", "Readings committed"),
    ("duplicates", "kerbline_spool_duplicates", "Reports already accepted before (acknowledged, not stored again)"),
    ("refused_full", "kerbline_spool_refused_full", "Reports refused because the spool was full of alarms"),
    ("thinned_reports", "kerbline_spool_thinned_reports", "Routine reports deleted at the byte bound"),
    ("thinned_readings", "kerbline_spool_thinned_readings", "Readings of the routine reports deleted at the bound"),
    ("purged_reports", "kerbline_spool_purged_reports", "Reports removed because every sink had them"),
    ("commits", "kerbline_spool_commits", "Group commits (one fsync each)"),
    ("commit_failures", "kerbline_spool_commit_failures", "Transactions that failed (their reports were not stored)"),
    ("dead_letters", "kerbline_spool_dead_letters_added", "Dead letters written"),
    ("dead_letters_dropped", "kerbline_spool_dead_letters_dropped", "Oldest dead letters dropped at the bound"),
)


def spool_collector(spool: Spool) -> Callable[[], Iterable[Metric]]:
    """A `collect()` for gateway.metrics.Metrics.register."""

    def collect() -> Iterable[Metric]:
        stats = spool.stats()
        c = stats.counters
        for attr, name, text in _COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(c, attr))
        dropped = CounterMetricFamily("kerbline_spool_thinned_undelivered",
                                      "Thinned reports a sink had not been sent, by sink", labels=["sink"])
        for sink in stats.delivered:
            dropped.add_metric([sink], c.dropped_by_sink.get(sink, 0))
        yield dropped
        yield GaugeMetricFamily("kerbline_spool_bytes", "Bytes of stored reports (the bounded quantity)",
                                value=stats.bytes)
        yield GaugeMetricFamily("kerbline_spool_max_bytes", "The spool's byte bound", value=stats.max_bytes)
        reports = GaugeMetricFamily("kerbline_spool_reports", "Reports stored, by kind", labels=["kind"])
        reports.add_metric(["alarm"], stats.alarm_reports)
        reports.add_metric(["routine"], stats.reports - stats.alarm_reports)
        yield reports
        yield GaugeMetricFamily("kerbline_spool_pending", "Reports submitted, not yet committed", value=stats.pending)
        yield GaugeMetricFamily("kerbline_spool_dedup_windows", "(device, boot) pairs tracked for dedup",
                                value=stats.dedup_windows)
        yield GaugeMetricFamily("kerbline_spool_dead_letters", "Dead letters kept", value=stats.dead_letters)
        yield GaugeMetricFamily("kerbline_spool_degraded", "1 while the spool is thinning, refusing or failing",
                                value=int(spool.health().degraded))

    return collect
