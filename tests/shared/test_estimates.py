"""The prediction-powered failure share: worked by hand, unbiased under a biased model, and
its 95% interval covers the truth about 95% of the time."""

from __future__ import annotations

import random

import pytest

from shared.estimates import (
    MIN_AUDIT,
    AuditPair,
    Stratum,
    estimate_share,
    stratified_estimate,
)


def test_no_audit_is_not_yet_validated_and_shows_the_prediction_only() -> None:
    result = estimate_share(1000, 300, [])
    assert result.status == "not yet validated"
    assert result.predicted == pytest.approx(0.3)
    assert (result.estimate, result.ci_low, result.ci_high) == (None, None, None)
    few = estimate_share(1000, 300, [AuditPair(1, 1)] * (MIN_AUDIT - 1))
    assert few.status == "not yet validated"
    assert few.audited == MIN_AUDIT - 1


def test_worked_by_hand() -> None:
    # 1,000 demands, the machine says 300 are failure. Audit of 20: the machine said failure
    # for 6, people agree on 5 and find 4 more among the 14 it called value.
    audit = (
        [AuditPair(1, 1)] * 5 + [AuditPair(1, 0)] + [AuditPair(0, 1)] * 4 + [AuditPair(0, 0)] * 10
    )
    result = estimate_share(1000, 300, audit)
    # mean(person - machine) = (4 - 1) / 20 = 0.15
    assert result.estimate == pytest.approx(0.45)
    # var(d) with one extra disagreement each way: d = 4x(+1), 1x(-1), 15x0, +1, -1
    # -> mean 3/22, sum of squares 7 - 22 * (3/22)^2; / 21; then / 20 for the mean.
    padded_mean = 3 / 22
    var_d = (7 - 22 * padded_mean**2) / 21
    variance = var_d / 20 * (1 - 20 / 1000)  # with the finite-population correction
    half = 1.959963984540054 * variance**0.5
    assert result.ci_low == pytest.approx(0.45 - half)
    assert result.ci_high == pytest.approx(0.45 + half)
    assert result.audited == 20
    assert result.status == "validated"


def test_a_perfect_looking_audit_still_has_an_interval() -> None:
    result = estimate_share(5000, 1000, [AuditPair(0, 0)] * 15)
    assert result.half_width is not None
    assert result.half_width > 0.03


def test_a_stratum_with_a_thin_audit_borrows_the_pooled_correction() -> None:
    rich = Stratum(800, 200, [AuditPair(0, 1)] * 5 + [AuditPair(0, 0)] * 45)  # +0.1
    thin = Stratum(200, 20, [AuditPair(0, 0)] * 2)
    result = stratified_estimate([rich, thin])
    pooled = 5 / 52
    expected = 0.8 * (0.25 + 0.1) + 0.2 * (0.1 + pooled)
    assert result.estimate == pytest.approx(expected)
    assert result.audited == 52


def _coverage(
    *, true_share: float, false_negative: float, false_positive: float, n_audit: int
) -> float:
    rng = random.Random(7)
    population = 4000
    hits = 0
    trials = 400
    for _ in range(trials):
        truth = [1 if rng.random() < true_share else 0 for _ in range(population)]
        machine = [
            (0 if rng.random() < false_negative else 1)
            if t
            else (1 if rng.random() < false_positive else 0)
            for t in truth
        ]
        audit_ids = rng.sample(range(population), n_audit)
        audit = [AuditPair(machine[i], truth[i]) for i in audit_ids]
        result = estimate_share(population, sum(machine), audit)
        actual = sum(truth) / population
        assert result.ci_low is not None
        assert result.ci_high is not None
        hits += result.ci_low <= actual <= result.ci_high
    return hits / trials


@pytest.mark.parametrize(
    ("true_share", "false_negative", "false_positive", "n_audit"),
    [
        (0.45, 0.35, 0.05, 200),  # a model that under-reports failure badly
        (0.08, 0.10, 0.06, 200),  # rare failure, over-reported
        (0.30, 0.20, 0.10, 50),
    ],
)
def test_the_interval_covers_the_truth_about_95_percent_of_the_time(
    true_share: float, false_negative: float, false_positive: float, n_audit: int
) -> None:
    coverage = _coverage(
        true_share=true_share,
        false_negative=false_negative,
        false_positive=false_positive,
        n_audit=n_audit,
    )
    # 400 trials: a true 95% coverage lands in [0.92, 0.98] with high probability; a
    # naive interval on the machine's share alone would cover almost never, and a needlessly
    # wide one would cover every time.
    assert 0.92 <= coverage <= 0.985


def test_an_audit_of_every_demand_leaves_only_the_padding() -> None:
    # A census: the estimate is the people's share itself.
    audit = [AuditPair(1, 1)] * 30 + [AuditPair(0, 1)] * 10 + [AuditPair(0, 0)] * 60
    result = estimate_share(100, 30, audit)
    assert result.estimate == pytest.approx(0.4)
    assert result.half_width == pytest.approx(0.0)


def test_the_machine_share_alone_would_be_far_off() -> None:
    # The same biased model: its own share misses the truth by a third.
    result = estimate_share(10_000, 3_250, [])
    assert result.predicted == pytest.approx(0.325)
