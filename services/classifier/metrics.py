"""The classifier's Prometheus instruments, in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, Info


class ClassifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.classified = Counter(
            "demandscope_classifier_classifications_total",
            "Demands classified.",
            ["demand_type", "purpose", "method"],
            registry=registry,
        )
        self.needs_review = Counter(
            "demandscope_classifier_needs_review_total",
            "Demands marked for a person to review.",
            ["purpose"],
            registry=registry,
        )
        self.confidence = Histogram(
            "demandscope_classifier_confidence",
            "Confidence of each classification.",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "demandscope_classifier_batch_seconds",
            "Time to classify one batch, excluding Kafka.",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.model = Info(
            "demandscope_classifier_model", "The live model version.", registry=registry
        )
