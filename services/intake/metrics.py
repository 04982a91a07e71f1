"""Intake's Prometheus instruments, in one place.

Labels stay bounded: ``kind`` (demand, case_event, label), ``channel`` (the Channel enum,
or "none"), ``source`` (one per API key's source, never a value a sender makes up: an
event naming another source is refused), ``reason`` (a fixed vocabulary, REASONS), the
route template and the status code. Never an event id, a customer or a case.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

NO_CHANNEL = "none"
UNKNOWN_SOURCE = "unknown"  # before the key is known (a 401)
REASONS = (
    "invalid",  # 422: a field is wrong
    "source_mismatch",  # the event names another system than its key
    "in_flight",  # the same id is being published by another request right now
    "too_large",  # 413
    "unsupported_media_type",  # 415
    "broker_unavailable",  # 503
    "ledger_unavailable",  # 503
)


class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Each labelled child, looked up once: labels() checks and joins its values under a
        # lock every call, ~1 µs, five times a single request (measured).
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        self.received = Counter(
            "demandscope_intake_events_received_total",
            "Events received, before validation (batches count each item).",
            ["kind", "source"],
            registry=registry,
        )
        self.accepted = Counter(
            "demandscope_intake_events_accepted_total",
            "Events acknowledged by the broker and answered as accepted.",
            ["kind", "channel", "source"],
            registry=registry,
        )
        self.duplicates = Counter(
            "demandscope_intake_events_duplicate_total",
            "Events whose id was already accepted: answered as duplicates, not published.",
            ["kind", "channel", "source"],
            registry=registry,
        )
        self.rejected = Counter(
            "demandscope_intake_events_rejected_total",
            "Events refused, by reason (see REASONS in services/intake/metrics.py).",
            ["kind", "source", "reason"],
            registry=registry,
        )
        self.redactions = Counter(
            "demandscope_intake_redactions_total",
            "Events whose text had personal data of this kind masked.",
            ["kind"],
            registry=registry,
        )
        self.broker_unavailable = Counter(
            "demandscope_intake_broker_unavailable_total",
            "Requests answered 503 because the broker could not acknowledge.",
            registry=registry,
        )
        self.wal_checkpoint_failures = Counter(
            "demandscope_intake_wal_checkpoint_failures_total",
            "Background checkpoints of the SQLite ledger's log that failed (shared/database/"
            "checkpoint.py): each is tried again next round, the connections' raised "
            "autocheckpoint covering meanwhile; a count that keeps rising wants a look at "
            "the disk.",
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "demandscope_intake_broker_ack_seconds",
            "Time from send to the broker's acks=all acknowledgement, per request.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_seconds = Histogram(
            "demandscope_intake_request_seconds",
            "HTTP request latency by route template and status code.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def child(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, kept: the labels are bounded (see above)."""
        child = self._children.get((metric, values))
        if child is None:
            child = self._children[(metric, values)] = metric.labels(*values)
        return child  # type: ignore[return-value]  # labels() gives a metric of its own type
