"""Intake's Prometheus instruments, in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "demandscope_intake_events_received_total",
            "Events received, before validation.",
            ["kind"],
            registry=registry,
        )
        self.accepted = Counter(
            "demandscope_intake_events_accepted_total",
            "Events acknowledged by the broker and answered 202.",
            ["kind", "channel", "source"],
            registry=registry,
        )
        self.rejected = Counter(
            "demandscope_intake_events_rejected_total",
            "Events refused, by reason.",
            ["kind", "reason"],
            registry=registry,
        )
        self.broker_unavailable = Counter(
            "demandscope_intake_broker_unavailable_total",
            "Requests answered 503 because the broker could not acknowledge.",
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "demandscope_intake_broker_ack_seconds",
            "Time from send to the broker's acks=all acknowledgement.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_seconds = Histogram(
            "demandscope_intake_request_seconds",
            "HTTP request latency.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
