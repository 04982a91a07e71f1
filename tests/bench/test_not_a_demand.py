"""bench.not_a_demand's simulation: the ratio covers the share among demands where chatter
is present and the machine calls some of it failure; the old estimator does not."""

from __future__ import annotations

import numpy as np

from bench.not_a_demand import Row, simulate


def test_the_ratio_covers_and_the_old_estimator_misses() -> None:
    # 300 contacts: 100 chatter (the machine calls 30 failure), 200 demands of which 120
    # failure (the machine finds 90, and calls 20 values failure).
    rows: list[Row] = (
        [(1, 0, 0)] * 30
        + [(0, 0, 0)] * 70
        + [(1, 1, 1)] * 90
        + [(0, 1, 1)] * 30
        + [(1, 0, 1)] * 20
        + [(0, 0, 1)] * 60
    )
    outcome = simulate(rows, 100, 200, np.random.default_rng(0), population=2000)
    n = len(outcome.new.errors)
    assert n == 200
    assert 0.9 <= outcome.new.hits / n <= 0.99
    assert 0.9 <= outcome.chatter.hits / n <= 0.995
    assert outcome.old.hits / n < 0.3  # 0.4 among contacts against 0.6 among demands
