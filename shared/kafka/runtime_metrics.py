"""Prometheus instruments of the Kafka runtime, shared by every consumer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "demandscope_consumer_lag",
            "Records not yet consumed: high watermark minus position.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.consumed = Counter(
            "demandscope_consumer_records_total",
            "Records consumed and committed.",
            ["group", "topic"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "demandscope_dead_letters_total",
            "Records sent to a dead-letter topic.",
            ["group", "topic", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "demandscope_consumer_retries_total",
            "Batches retried after a failure.",
            ["group"],
            registry=registry,
        )
        self.fenced = Counter(
            "demandscope_consumer_fenced_total",
            "Batches not committed because another instance had taken their partitions "
            "(this one was paused or cut off past its session timeout).",
            ["group"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "demandscope_consumer_batch_seconds",
            "Time to process and commit one batch.",
            ["group"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
