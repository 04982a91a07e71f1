"""bench.not_a_demand's simulation: the ratio covers the share among demands where chatter
is present and the machine calls some of it failure; the old estimator does not."""

from __future__ import annotations

import numpy as np

from bench.not_a_demand import Row, approximate_half_width, half_width_bounds, simulate

# 300 contacts: 100 chatter (the machine calls 30 failure), 200 demands of which 120 failure
# (the machine finds 90, and calls 20 values failure).
CONTACTS: list[Row] = (
    [(1, 0, 0)] * 30
    + [(0, 0, 0)] * 70
    + [(1, 1, 1)] * 90
    + [(0, 1, 1)] * 30
    + [(1, 0, 1)] * 20
    + [(0, 0, 1)] * 60
)


def test_the_ratio_covers_and_the_old_estimator_misses() -> None:
    rows = CONTACTS
    outcome = simulate(rows, 100, 200, np.random.default_rng(0), population=2000)
    n = len(outcome.new.errors)
    assert n == 200
    assert 0.9 <= outcome.new.hits / n <= 0.99
    assert 0.9 <= outcome.chatter.hits / n <= 0.995
    assert outcome.old.hits / n < 0.3  # 0.4 among contacts against 0.6 among demands


def test_the_bounds_order_machines_by_what_they_explain() -> None:
    rows = CONTACTS
    bounds = dict(half_width_bounds(rows, np.random.default_rng(0)))
    today = bounds["as it is (calls every contact a demand)"]
    told = bounds["as it is, and says 'not a demand' without error"]
    assert 0 < told <= today
    widths = [bounds[f"value/failure right on {a:.0%} of demands"] for a in (0.8, 0.85, 0.9, 0.95)]
    assert widths == sorted(widths, reverse=True)  # more accurate, narrower


def test_a_machine_that_is_always_right_leaves_no_width() -> None:
    failure = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    demand = np.array([1, 1, 1, 0, 0, 1, 1, 0])
    assert approximate_half_width(failure, demand, [failure, demand]) < 1e-9
    assert approximate_half_width(failure, demand, [np.zeros(8)]) > 0.05
