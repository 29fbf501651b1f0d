"""Step 4 of the pipeline: the batcher and the sinks (HTTP, MQTT, NGSI-LD, JSON Lines).

`Upstream(spool, [SinkSpec(sink, BatchConfig(...), RetryPolicy(...)), ...])` runs one delivery loop per
sink over the spool; see gateway.upstream.batcher and docs/gateway.md, section "Upstream".
"""
from gateway.upstream.backoff import RetryPolicy
from gateway.upstream.batch import Batch, BatchConfig
from gateway.upstream.batcher import SinkRunner, SinkSpec, SinkStats, Upstream
from gateway.upstream.sink import Outcome, SendResult, Sink

__all__ = ["Batch", "BatchConfig", "Outcome", "RetryPolicy", "SendResult", "Sink", "SinkRunner", "SinkSpec",
           "SinkStats", "Upstream"]
