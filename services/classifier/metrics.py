"""The classifier's Prometheus instruments, in one place. Consumer lag is exported by the
shared consumer runtime (``demandscope_consumer_lag``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class ClassifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.classified = Counter(
            "demandscope_classifier_classifications_total",
            "Demands classified, by demand type, purpose and the method that decided.",
            ["demand_type", "purpose", "method"],
            registry=registry,
        )
        # The share for review is review{needs_review="true"} / sum(review).
        self.review = Counter(
            "demandscope_classifier_review_total",
            "Demands classified, split by whether they were marked for a person to review.",
            ["needs_review"],
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
        self.delay_seconds = Histogram(
            "demandscope_classifier_delay_seconds",
            "From intake's acceptance of a demand to its classification.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=registry,
        )
        self.model = Info(
            "demandscope_classifier_model",
            "The model version this instance classifies with.",
            registry=registry,
        )
        # Max over instances > 0 for longer than a few watch intervals: an instance cannot
        # load the fleet's current version (see its log).
        self.model_behind = Gauge(
            "demandscope_classifier_model_behind",
            "1 while this instance serves another version than the database's current one.",
            registry=registry,
        )
        self.labels_received = Counter(
            "demandscope_classifier_labels_total",
            "People's labels received (confirmations and corrections).",
            registry=registry,
        )
        self.model_swaps = Counter(
            "demandscope_classifier_model_swaps_total",
            "Times the live model was replaced (start, retrain, rollback, a new current version).",
            registry=registry,
        )
        self.customers_in_context = Gauge(
            "demandscope_classifier_context_customers",
            "Customers whose recent context this instance holds.",
            registry=registry,
        )
        # predicted_by="service": a poll asked of the model worker but predicted here (the
        # worker gone or late, or another model version in use by then).
        self.model_worker_polls = Counter(
            "demandscope_classifier_model_worker_polls_total",
            "Polls whose predictions were asked of the model worker, by who predicted them.",
            ["predicted_by"],
            registry=registry,
        )
