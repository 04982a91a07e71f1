"""Intake's Prometheus instruments, in one place.

Labels stay bounded: ``kind`` (demand, case_event, label), ``channel`` (the Channel enum,
or "none"), ``source`` (one per API key's source, never a value a sender makes up: an
event naming another source is refused), ``reason`` (a fixed vocabulary, REASONS), the
route template and the status code. Never an event id, a customer or a case.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

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


class CountChild:
    """One labelled series of a ``LoopCounter``: a plain number."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class ObserveChild:
    """One labelled series of a ``LoopHistogram``: a count per bucket and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is at least the amount, as prometheus_client's loop
        # finds it (the last bound is +Inf); a NaN is in none there, so in none here.
        if amount == amount:
            self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


C = TypeVar("C", CountChild, ObserveChild)


class _LoopMetric(Collector, Generic[C]):
    """A labelled metric whose series are plain numbers, written on the event loop.

    prometheus_client's Counter and Histogram take a lock and go through three or four
    Python calls a sample (validation, the observable check, the value's lock): six of
    them cost a single request ~4% of its instructions in process (callgrind), ~1-2 µs of
    the ~165-185 µs of CPU a request takes end to end. Intake counts on its event loop's
    thread only, so a series here is a number it adds to, and the registry reads the
    numbers when it is scraped: always current, nothing deferred. The exposition is
    prometheus_client's own, sample for sample (test_loop_metrics); multiprocess mode and
    exemplars are not supported.

    Only the thread that made the metric may add to it (an increment elsewhere could be
    lost against the loop's). Making a new series checks that and raises; a series
    already made is not checked (that is the hot path).
    """

    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        self._thread = threading.get_ident()
        registry.register(self)

    def labels(self, *values: str) -> C:
        """The series of these label values (made on first use), as ``labels()`` gives."""
        child = self._children.get(values)
        if child is None:
            child = self._new_series(values)
        return child

    def _new_series(self, values: tuple[str, ...]) -> C:
        # Off the hot path: each value as its text, as prometheus_client's labels() keeps
        # it (a value kept as passed, an int say, would fail every later scrape).
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
        values = tuple(str(value) for value in values)
        child = self._children.get(values)
        if child is None:
            if threading.get_ident() != self._thread:
                raise RuntimeError(
                    f"{self.name}: a loop metric is written only on the thread that made it "
                    "(intake's event loop), never from a def endpoint or a to_thread callback"
                )
            child = self._children[values] = self._new_child()
        return child

    def _new_child(self) -> C:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, self.kind)

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        # prometheus_client's own switch, read at each scrape as its metrics do: set from
        # PROMETHEUS_DISABLE_CREATED_SERIES at its import, then by disable_created_metrics()
        # and enable_created_metrics() (a library without it: the samples, as before it had
        # the switch; test_loop_metrics would say so).
        created = bool(getattr(prometheus_metrics, "_use_created", True))
        for values, child in list(self._children.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            self._add_samples(family, labels, child, created=created)
        yield family

    def _add_samples(
        self, family: Metric, labels: dict[str, str], child: C, *, created: bool
    ) -> None:
        raise NotImplementedError


class LoopCounter(_LoopMetric[CountChild]):
    """prometheus_client's labelled Counter, counted on the loop (see ``_LoopMetric``)."""

    kind = "counter"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        # The family is named without "_total", its sample with it, as Counter does.
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _new_child(self) -> CountChild:
        return CountChild()

    def _add_samples(
        self, family: Metric, labels: dict[str, str], child: CountChild, *, created: bool
    ) -> None:
        family.add_sample(f"{self.name}_total", labels, child.value)
        if created:
            family.add_sample(f"{self.name}_created", labels, child.created)


class LoopHistogram(_LoopMetric[ObserveChild]):
    """prometheus_client's Histogram, observed on the loop (see ``_LoopMetric``). Without
    label names it is its own single series (``observe``)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float],
    ) -> None:
        # prometheus_client's rules: sorted, +Inf added, then at least two bounds.
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self.bounds = bounds
        # Each bound's "le" text, as prometheus_client writes it.
        self._le = [str(floatToGoString(bound)) for bound in self.bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)
        self._single = None if labelnames else self.labels()

    def observe(self, amount: float) -> None:
        if self._single is None:
            raise ValueError(f"{self.name} has labels: observe a child (labels())")
        self._single.observe(amount)

    def _new_child(self) -> ObserveChild:
        return ObserveChild(self.bounds)

    def _add_samples(
        self, family: Metric, labels: dict[str, str], child: ObserveChild, *, created: bool
    ) -> None:
        total = 0.0
        for le, count in zip(self._le, child.counts, strict=True):
            total += count
            family.add_sample(f"{self.name}_bucket", {**labels, "le": le}, total)
        family.add_sample(f"{self.name}_count", labels, total)
        if self.bounds[0] >= 0:
            family.add_sample(f"{self.name}_sum", labels, child.sum)
        if created:
            family.add_sample(f"{self.name}_created", labels, child.created)


class IntakeMetrics:
    """Intake's instruments. The hot ones are ``LoopCounter``/``LoopHistogram`` (call
    ``.labels(...)`` as on prometheus_client's): written only on the event loop's thread,
    the one that built them, so a ``def`` endpoint or a ``to_thread`` callback must not
    touch them (a new series made off that thread raises RuntimeError)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = LoopCounter(
            "demandscope_intake_events_received_total",
            "Events received, before validation (batches count each item).",
            ["kind", "source"],
            registry=registry,
        )
        self.accepted = LoopCounter(
            "demandscope_intake_events_accepted_total",
            "Events acknowledged by the broker and answered as accepted.",
            ["kind", "channel", "source"],
            registry=registry,
        )
        self.duplicates = LoopCounter(
            "demandscope_intake_events_duplicate_total",
            "Events whose id was already accepted: answered as duplicates, not published.",
            ["kind", "channel", "source"],
            registry=registry,
        )
        self.rejected = LoopCounter(
            "demandscope_intake_events_rejected_total",
            "Events refused, by reason (see REASONS in services/intake/metrics.py).",
            ["kind", "source", "reason"],
            registry=registry,
        )
        self.redactions = LoopCounter(
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
        self.ack_seconds = LoopHistogram(
            "demandscope_intake_broker_ack_seconds",
            "Time from send to the broker's acks=all acknowledgement, per request.",
            (),
            registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.request_seconds = LoopHistogram(
            "demandscope_intake_request_seconds",
            "HTTP request latency by route template and status code.",
            ["route", "status"],
            registry,
            buckets=_LATENCY_BUCKETS,
        )
