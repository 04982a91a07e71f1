"""The audit sample's design: a uniform draw per demand id that nothing else moves, an
inclusion probability per stratum that meets rate, floor and ceiling in expectation and
never grows, and the estimate per group over the strata."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from services.metrics.domain.audit import (
    AuditedDemand,
    AuditPlan,
    MachineCount,
    draw,
    estimates_by_group,
    inclusion_probability,
    week_start,
)

PLAN = AuditPlan(rate=0.02, min_per_week=30, max_per_week=300, key="test-key")
IDS = [f"demand-{i}" for i in range(20_000)]


def test_the_draw_is_uniform_and_fixed_per_id_and_key() -> None:
    draws = [PLAN.draw(i) for i in IDS]
    assert all(0.0 <= u < 1.0 for u in draws)
    assert draws == [draw("test-key", i) for i in IDS]  # the same again: redelivery, rebuild
    assert [draw("another-key", i) for i in IDS[:50]] != draws[:50]  # the key matters
    # Ten equal bins: each holds 2,000 ± 4 standard deviations (~170).
    counts = [0] * 10
    for u in draws:
        counts[int(u * 10)] += 1
    assert all(abs(count - 2_000) < 170 for count in counts), counts


@pytest.mark.parametrize(
    "key",
    [
        "test-key",
        "",
        "k" * 64,
        "a key longer than SHA-256's block of sixty-four bytes, hashed first",
        "clé-ü",
    ],
)
def test_the_draw_is_hmac_sha256_of_the_id(key: str) -> None:
    """The documented draw (docs/services/metrics.md), whatever the way it is computed: the
    same sample as every earlier version drew, for any key (short, empty, a block long,
    longer, not ASCII) and any id."""
    for demand_id in [*IDS[:200], "", "ü-id", "x" * 300]:
        digest = hmac.new(key.encode(), demand_id.encode(), hashlib.sha256).digest()
        assert draw(key, demand_id) == (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def test_in_the_middle_the_rate_is_met_within_tolerance() -> None:
    population = 5_000  # 2% is 100: between the floor and the ceiling
    p = inclusion_probability(population, PLAN)
    assert p == pytest.approx(0.02)
    drawn = sum(PLAN.draw(i) < p for i in IDS)
    # 20,000 demands at 2%: 400 ± 4 standard deviations (~79).
    assert abs(drawn - 400) < 79


@pytest.mark.parametrize(
    ("population", "expected"),
    [
        (10, 10),  # fewer than the floor: every one
        (200, 30),  # 2% would be 4: the floor
        (1_500, 30),
        (5_000, 100),  # 2%
        (15_000, 300),  # 2% would be 300: the ceiling exactly
        (100_000, 300),  # 2% would be 2,000: the ceiling
    ],
)
def test_floor_and_ceiling_hold_in_expectation(population: int, expected: int) -> None:
    assert inclusion_probability(population, PLAN) * population == pytest.approx(expected)


def test_floor_and_ceiling_hold_on_the_draws() -> None:
    # 40 strata of 1,000 demands at the floor (expected 30), and one of 20,000 at the
    # ceiling (expected 300): sizes within 4 standard deviations of their expectation.
    floor_p = inclusion_probability(1_000, PLAN)
    sizes = [sum(PLAN.draw(f"s{s}-{i}") < floor_p for i in range(1_000)) for s in range(40)]
    assert abs(sum(sizes) / len(sizes) - 30) < 4 * (30**0.5) / (40**0.5)
    ceiling_p = inclusion_probability(20_000, PLAN)
    assert abs(sum(PLAN.draw(i) < ceiling_p for i in IDS) - 300) < 4 * 300**0.5


def test_the_probability_never_grows_with_the_stratum() -> None:
    # So a demand drawn out is never drawn in later: the sample only shrinks as a week fills.
    probabilities = [inclusion_probability(n, PLAN) for n in range(1, 40_000, 7)]
    assert all(a >= b for a, b in pairwise(probabilities))


def test_a_plan_refuses_a_floor_above_its_ceiling() -> None:
    with pytest.raises(ValueError, match="floor"):
        AuditPlan(min_per_week=10, max_per_week=5)
    with pytest.raises(ValueError, match="rate"):
        AuditPlan(rate=0)


def test_iso_weeks_start_on_monday_in_utc() -> None:
    assert week_start(datetime(2026, 3, 1, 23, 0, tzinfo=UTC)) == date(2026, 2, 23)  # Sunday
    assert week_start(datetime(2026, 3, 2, 0, 0, tzinfo=UTC)) == date(2026, 3, 2)  # Monday


def test_estimates_per_group_use_value_and_failure_only() -> None:
    week = date(2026, 3, 2)
    counts = [
        MachineCount("billing", ("billing", week), "value", 80),
        MachineCount("billing", ("billing", week), "failure", 20),
        MachineCount("billing", ("billing", week), "unknown", 50),  # outside the share
        MachineCount("moving", ("moving", week), "value", 10),
    ]
    # Of 20 audited, the machine said value for all; people found 6 failures, and one
    # 'unknown' (not failure); an audited 'unknown' of the machine is outside the share.
    audited = [AuditedDemand("billing", ("billing", week), "value", "failure")] * 6
    audited += [AuditedDemand("billing", ("billing", week), "value", "unknown")]
    audited += [AuditedDemand("billing", ("billing", week), "value", "value")] * 13
    audited += [AuditedDemand("billing", ("billing", week), "unknown", "failure")] * 5
    estimates = estimates_by_group(counts, audited)
    billing = estimates["billing"]
    assert billing.status == "validated"
    assert billing.audited == 20
    assert billing.predicted == pytest.approx(0.2)
    assert billing.estimate == pytest.approx(0.2 + 6 / 20)
    assert estimates["moving"].status == "not yet validated"
    assert estimates["moving"].estimate is None
