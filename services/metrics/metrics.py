"""The metrics service's Prometheus instruments, in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class MetricsServiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.demands_stored = Counter(
            "demandscope_metrics_demands_total",
            "Classified demands consumed, by purpose and type (redeliveries included).",
            ["purpose", "demand_type", "channel"],
            registry=registry,
        )
