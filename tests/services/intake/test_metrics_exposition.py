"""IntakeMetrics' exposition is what prometheus_client writes for the same metrics.

The library's side is declared here by hand, names, help and labels as intake's own, so a
change of a name, a help text, a label or a bucket in services/intake/metrics.py shows up
here as well as any difference in how the loop metrics write their samples.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services.intake.metrics import IntakeMetrics

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _exposition(registry: CollectorRegistry) -> str:
    # Each series' creation time is its own.
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


def _prometheus_clients(registry: CollectorRegistry) -> dict[str, Counter | Histogram]:
    return {
        "received": Counter(
            "demandscope_intake_events_received_total",
            "Events received, before validation (batches count each item).",
            ["kind", "source"],
            registry=registry,
        ),
        "accepted": Counter(
            "demandscope_intake_events_accepted_total",
            "Events acknowledged by the broker and answered as accepted.",
            ["kind", "channel", "source"],
            registry=registry,
        ),
        "duplicates": Counter(
            "demandscope_intake_events_duplicate_total",
            "Events whose id was already accepted: answered as duplicates, not published.",
            ["kind", "channel", "source"],
            registry=registry,
        ),
        "rejected": Counter(
            "demandscope_intake_events_rejected_total",
            "Events refused, by reason (see REASONS in services/intake/metrics.py).",
            ["kind", "source", "reason"],
            registry=registry,
        ),
        "redactions": Counter(
            "demandscope_intake_redactions_total",
            "Events whose text had personal data of this kind masked.",
            ["kind"],
            registry=registry,
        ),
        "broker_unavailable": Counter(
            "demandscope_intake_broker_unavailable_total",
            "Requests answered 503 because the broker could not acknowledge.",
            registry=registry,
        ),
        "wal_checkpoint_failures": Counter(
            "demandscope_intake_wal_checkpoint_failures_total",
            "Background checkpoints of the SQLite ledger's log that failed (shared/database/"
            "checkpoint.py): each is tried again next round, the connections' raised "
            "autocheckpoint covering meanwhile; a count that keeps rising wants a look at "
            "the disk.",
            registry=registry,
        ),
        "ack_seconds": Histogram(
            "demandscope_intake_broker_ack_seconds",
            "Time from send to the broker's acks=all acknowledgement, per request.",
            buckets=_BUCKETS,
            registry=registry,
        ),
        "request_seconds": Histogram(
            "demandscope_intake_request_seconds",
            "HTTP request latency by route template and status code.",
            ["route", "status"],
            buckets=_BUCKETS,
            registry=registry,
        ),
    }


def _record(metrics: Any) -> None:
    """The same samples on either side: IntakeMetrics or the library's, by attribute."""
    metrics.received.labels("demand", "crm").inc(3)
    metrics.received.labels("label", "crm").inc()
    metrics.accepted.labels("demand", "phone", "crm").inc(2)
    metrics.accepted.labels("demand", "none", "crm").inc()
    metrics.duplicates.labels("demand", "email", "crm").inc()
    for reason in ("invalid", "in_flight", "broker_unavailable"):
        metrics.rejected.labels("demand", "crm", reason).inc()
    metrics.redactions.labels("email").inc(4)
    metrics.broker_unavailable.inc()
    metrics.wal_checkpoint_failures.inc()
    for seconds in (0.0004, 0.003, 0.003, 0.2, 12.0):
        metrics.ack_seconds.observe(seconds)
    metrics.request_seconds.labels("/v1/demands", "202").observe(0.004)
    metrics.request_seconds.labels("/v1/demands", "422").observe(0.001)
    metrics.request_seconds.labels("/v1/demands:batch", "202").observe(0.05)


def test_intakes_metrics_expose_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    intake = IntakeMetrics(ours)
    library = SimpleNamespace(**_prometheus_clients(theirs))
    assert _exposition(ours) == _exposition(theirs)  # before any sample
    _record(intake)
    _record(library)
    assert _exposition(ours) == _exposition(theirs)
