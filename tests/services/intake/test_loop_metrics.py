"""Intake's loop metrics expose exactly what prometheus_client's Counter and Histogram do."""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

from services.intake.metrics import IntakeMetrics, LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# 7 and "7" are one series to prometheus_client (it keeps str() of each value).
LABELS: st.SearchStrategy[tuple[str, Any]] = st.tuples(
    st.sampled_from(["demand", "label"]), st.sampled_from(["a", "b", 'q"\\\n', 7, "7"])
)
AMOUNTS = st.one_of(
    st.floats(min_value=-1, max_value=20, allow_nan=False),
    st.sampled_from([*BUCKETS, 0.0, math.inf, math.nan]),
)


def _exposition(registry: CollectorRegistry) -> str:
    # The series' creation times differ between the two (each is its own series' time).
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(st.tuples(LABELS, st.integers(0, 5))),
    observations=st.lists(st.tuples(LABELS, AMOUNTS)),
    single=st.lists(AMOUNTS),
)
def test_the_exposition_is_prometheus_clients_own(
    counts: list[tuple[tuple[str, Any], int]],
    observations: list[tuple[tuple[str, Any], float]],
    single: list[float],
) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    name, help_text = "x_events_total", "Events."
    their_counter = Counter(name, help_text, ["kind", "source"], registry=theirs)
    our_counter = LoopCounter(name, help_text, ["kind", "source"], ours)
    their_histogram = Histogram(
        "x_seconds", "Time.", ["kind", "source"], buckets=BUCKETS, registry=theirs
    )
    our_histogram = LoopHistogram("x_seconds", "Time.", ["kind", "source"], ours, buckets=BUCKETS)
    their_single = Histogram("x_ack_seconds", "Ack.", buckets=BUCKETS, registry=theirs)
    our_single = LoopHistogram("x_ack_seconds", "Ack.", (), ours, buckets=BUCKETS)
    for labels, amount in counts:
        their_counter.labels(*labels).inc(amount)
        our_counter.labels(*labels).inc(amount)
    for labels, seconds in observations:
        their_histogram.labels(*labels).observe(seconds)
        our_histogram.labels(*labels).observe(seconds)
    for seconds in single:
        their_single.observe(seconds)
        our_single.observe(seconds)
    assert _exposition(ours) == _exposition(theirs)
    for metric in ("x_events_total", "x_seconds_count", "x_seconds_sum", "x_ack_seconds_sum"):
        for series in ({"kind": "demand", "source": "a"}, {}):
            mine = ours.get_sample_value(metric, series)
            its = theirs.get_sample_value(metric, series)
            assert repr(mine) == repr(its)  # None, a number, or nan alike


def test_counts_are_current_at_every_scrape_and_refuse_what_counters_refuse() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("y_total", "Y.", ["kind"], registry)
    counter.labels("a").inc()
    assert registry.get_sample_value("y_total", {"kind": "a"}) == 1
    counter.labels("a").inc(2.5)
    assert registry.get_sample_value("y_total", {"kind": "a"}) == 3.5
    assert registry.get_sample_value("y_created", {"kind": "a"}) is not None
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match="label values"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoopCounter("y_total", "Y again.", ["kind"], registry)  # one name, one collector
    with pytest.raises(ValueError, match="has labels"):
        LoopHistogram("z_seconds", "Z.", ["kind"], registry, buckets=BUCKETS).observe(1.0)


def test_a_series_counts_apart_from_the_others() -> None:
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry)

    phone = metrics.accepted.labels("demand", "phone", "crm")
    assert metrics.accepted.labels("demand", "phone", "crm") is phone
    phone.inc(2)
    metrics.accepted.labels("demand", "email", "crm").inc()
    metrics.duplicates.labels("demand", "phone", "crm").inc(5)

    def value(name: str, channel: str) -> float | None:
        labels = {"kind": "demand", "channel": channel, "source": "crm"}
        return registry.get_sample_value(name, labels)

    assert value("demandscope_intake_events_accepted_total", "phone") == 2
    assert value("demandscope_intake_events_accepted_total", "email") == 1
    assert value("demandscope_intake_events_duplicate_total", "phone") == 5


def test_a_new_series_off_the_making_thread_is_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("t_total", "T.", ["kind"], registry)
    histogram = LoopHistogram("t_seconds", "T.", ["kind"], registry, buckets=BUCKETS)
    counter.labels("made").inc()
    with ThreadPoolExecutor(1) as pool:
        for make in (lambda: counter.labels("new"), lambda: histogram.labels("new")):
            with pytest.raises(RuntimeError, match="only on the thread that made it"):
                pool.submit(make).result()
    assert registry.get_sample_value("t_total", {"kind": "new"}) is None
    assert registry.get_sample_value("t_seconds_count", {"kind": "new"}) is None
    counter.labels("new").inc()  # on the making thread it is made
    assert registry.get_sample_value("t_total", {"kind": "new"}) == 1


def test_the_created_switch_is_prometheus_clients_at_each_scrape() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    Counter("s_total", "S.", ["kind"], registry=theirs).labels("a").inc()
    LoopCounter("s_total", "S.", ["kind"], ours).labels("a").inc()
    Histogram("s_seconds", "S.", buckets=BUCKETS, registry=theirs).observe(0.2)
    LoopHistogram("s_seconds", "S.", (), ours, buckets=BUCKETS).observe(0.2)
    assert "_created" in _exposition(ours)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        assert "_created" not in _exposition(ours)
        assert _exposition(ours) == _exposition(theirs)
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]
    assert _exposition(ours) == _exposition(theirs)


@pytest.mark.parametrize("buckets", [(), (math.inf,), (2.0, 1.0), (1.0,), (1.0, math.inf)])
def test_buckets_follow_prometheus_clients_rules(buckets: tuple[float, ...]) -> None:
    def error(make: Any) -> str | None:
        try:
            make()
        except ValueError as exc:
            return str(exc)
        return None

    theirs = error(lambda: Histogram("b_seconds", "B.", buckets=buckets, registry=None))
    ours = error(lambda: LoopHistogram("b_seconds", "B.", (), CollectorRegistry(), buckets=buckets))
    assert ours == theirs
