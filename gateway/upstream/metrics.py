"""The batcher's Prometheus metrics per sink, built at scrape time (`Metrics.register(collector)`)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from gateway.upstream.batcher import LATENCY_BUCKETS, Upstream

_COUNTERS = (
    ("batches", "kerbline_upstream_batches", "Batches a sink took"),
    ("reports", "kerbline_upstream_reports", "Reports delivered"),
    ("records", "kerbline_upstream_readings", "Readings delivered"),
    ("retries", "kerbline_upstream_retries", "Sends that will be tried again"),
    ("dead_batches", "kerbline_upstream_dead_batches", "Batches refused for good (moved to the dead letters)"),
    ("dead_letters", "kerbline_upstream_dead_letters", "Dead letters written (whole batches and single entities)"),
)


def upstream_collector(upstream: Upstream) -> Callable[[], Iterable[Metric]]:
    """A `collect()` for gateway.metrics.Metrics.register."""

    def collect() -> Iterable[Metric]:
        runners = upstream.runners
        for attr, name, text in _COUNTERS:
            family = CounterMetricFamily(name, text, labels=["sink"])
            for runner in runners:
                family.add_metric([runner.name], getattr(runner.stats, attr))
            yield family
        lag = GaugeMetricFamily("kerbline_upstream_lag", "Spool ids committed but not yet delivered, by sink",
                                labels=["sink"])
        failing = GaugeMetricFamily("kerbline_upstream_failing", "1 while a sink's current batch is being retried",
                                    labels=["sink"])
        latency = HistogramMetricFamily("kerbline_upstream_latency_seconds",
                                        "Arrival at the gateway to acceptance by the sink, per report",
                                        labels=["sink"])
        last_id = upstream.spool.last_id
        for runner in runners:
            lag.add_metric([runner.name], max(0, last_id - runner.delivered))
            failing.add_metric([runner.name], int(runner.stats.failing_since is not None))
            hist = runner.stats.latency
            cumulative = list(accumulate(hist.counts))
            buckets = [(str(bound), count) for bound, count in zip(LATENCY_BUCKETS, cumulative)]
            buckets.append(("+Inf", cumulative[-1]))
            latency.add_metric([runner.name], buckets, sum_value=hist.total)
        yield lag
        yield failing
        yield latency

    return collect
