"""The metrics service's Prometheus instruments, in one place.

Labels stay bounded: purpose, channel, demand type, failure kind, cause kind (case, demand,
untraced), chart measure and rule, estimate bound, and the owning team of a purpose (a team
slug of the taxonomy: as many as its teams). Never a customer, a case or a demand.
The per-purpose gauges and the signals carry ``owner`` so that their alerts reach the team
that owns the purpose (deploy/alertmanager/).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.metrics.domain.buckets import END_TO_END_BUCKETS
from shared.events import PurposeMetrics


class MetricsServiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.demands_consumed = Counter(
            "demandscope_metrics_demands_total",
            "Classified demands consumed (redeliveries included: the stored figures are exact).",
            ["purpose", "demand_type", "channel", "failure_kind"],
            registry=registry,
        )
        # Counted like demands_total (the same events, at the same moment, with the
        # classifier's labels), so it adds up to demands_total{demand_type="failure"}.
        self.failure_demands = Counter(
            "demandscope_metrics_failure_demands_total",
            "Classified failure demands consumed, by kind and by what they trace back to "
            "(cause: case, demand or untraced). Counted like demandscope_metrics_demands_total.",
            ["purpose", "failure_kind", "cause"],
            registry=registry,
        )
        self.end_to_end = Histogram(
            "demandscope_metrics_end_to_end_seconds",
            "End-to-end time of each case fulfilled, first demand to fulfilment, calendar time.",
            ["purpose", "channel"],
            buckets=END_TO_END_BUCKETS,
            registry=registry,
        )
        self.failure_share = Gauge(
            "demandscope_metrics_failure_demand_share",
            "Failure / (value + failure) demand over the published window, per purpose, as "
            "labelled (the machine's prediction, a person's label where one exists).",
            ["purpose", "owner"],
            registry=registry,
        )
        self.failure_share_estimate = Gauge(
            "demandscope_metrics_failure_share_estimate",
            "The failure share over the published window corrected by the blind audit, and "
            "its 95% interval (bound: estimate, ci_low, ci_high), per purpose; absent while "
            "not yet validated.",
            ["purpose", "owner", "bound"],
            registry=registry,
        )
        self.failure_share_audited = Gauge(
            "demandscope_metrics_failure_share_audited",
            "Audited demands behind the failure share's estimate over the published window.",
            ["purpose", "owner"],
            registry=registry,
        )
        self.queue_texts_purged = Counter(
            "demandscope_metrics_queue_texts_purged_total",
            "Customers' words deleted from the review and audit queues (past retention, or "
            "no queue needs them).",
            registry=registry,
        )
        self.open_cases = Gauge(
            "demandscope_metrics_open_cases",
            "Cases open now, per purpose.",
            ["purpose", "owner"],
            registry=registry,
        )
        self.capability_limit = Gauge(
            "demandscope_metrics_capability_limit",
            "XmR chart lines per purpose: centre, lower and upper natural process limits.",
            ["purpose", "owner", "measure", "line"],
            registry=registry,
        )
        self.signals = Counter(
            "demandscope_metrics_special_cause_signals_total",
            "Special-cause signals raised on a capability chart: counted once across restarts "
            "and replicas (by the replica whose insert recorded it in the database).",
            ["purpose", "owner", "measure", "rule"],
            registry=registry,
        )
        self.decode_worker_batches = Counter(
            "demandscope_metrics_decode_worker_batches_total",
            "A backlog's batches sent to the decoding worker, by who prepared them: worker, "
            "or service (the worker gone, or a batch with labels or recorded changes).",
            ["prepared_by"],
            registry=registry,
        )
        self.published = Counter(
            "demandscope_metrics_purpose_metrics_published_total",
            "PurposeMetrics events published to purpose.metrics.",
            registry=registry,
        )
        self.signals_published = Counter(
            "demandscope_metrics_signals_published_total",
            "Special-cause signals sent to capability.signals (a resend after a crash counts "
            "again; subscribers deduplicate on signal_id).",
            registry=registry,
        )
        self.wal_checkpoint_failures = Counter(
            "demandscope_metrics_wal_checkpoint_failures_total",
            "Background checkpoints of the SQLite log that failed (shared/database/"
            "checkpoint.py): each is tried again next round, the engine's autocheckpoint "
            "covering meanwhile; a count that keeps rising wants a look at the disk.",
            registry=registry,
        )
        self._estimated: set[tuple[str, str, str]] = set()

    def record_purpose(self, figures: PurposeMetrics, *, owner: str) -> None:
        """Set the per-purpose gauges (signals are counted where they are raised)."""
        purpose = figures.purpose
        if figures.failure_ratio is not None:
            self.failure_share.labels(purpose, owner).set(figures.failure_ratio)
        self.open_cases.labels(purpose, owner).set(figures.open_cases)
        self.failure_share_audited.labels(purpose, owner).set(figures.failure_share_audited)
        bounds = {
            "estimate": figures.failure_share_estimate,
            "ci_low": figures.failure_share_ci_low,
            "ci_high": figures.failure_share_ci_high,
        }
        for bound, value in bounds.items():
            if value is not None:
                self.failure_share_estimate.labels(purpose, owner, bound).set(value)
                self._estimated.add((purpose, owner, bound))
            elif (purpose, owner, bound) in self._estimated:  # not validated now: none stale
                self.failure_share_estimate.remove(purpose, owner, bound)
                self._estimated.discard((purpose, owner, bound))
        for chart in figures.capability:
            lines = {
                "centre": chart.centre_line,
                "lower_natural_process_limit": chart.lower_natural_process_limit,
                "upper_natural_process_limit": chart.upper_natural_process_limit,
                "upper_range_limit": chart.upper_range_limit,
            }
            for line, value in lines.items():
                self.capability_limit.labels(purpose, owner, chart.measure, line).set(value)
