from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.domain.signals import BEYOND_LIMIT, SignalHit
from services.metrics.domain.xmr import ChartPoint, build_chart, compute_limits

# NIST/SEMATECH e-Handbook of Statistical Methods, section 6.3.2.2 "Individuals Control
# Charts", https://www.itl.nist.gov/div898/handbook/pmc/section3/pmc322.htm : flow rate of
# ten batches. Published: mean 50.81, MR-bar 1.8778, UCL = 50.81 + 3(1.8778)/1.128 = 55.8041,
# LCL = 45.8159. Hand check: the nine moving ranges 2.0, 2.3, 1.4, 3.5, 3.4, 1.4, 0.2, 1.2,
# 1.5 sum to 16.9, and 16.9 / 9 = 1.87778.
NIST_FLOW_RATE = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1]


def test_limits_reproduce_the_nist_individuals_chart_example() -> None:
    limits = compute_limits(NIST_FLOW_RATE)

    assert round(limits.centre_line, 2) == 50.81
    assert round(limits.average_moving_range, 4) == 1.8778
    assert round(limits.upper_natural_process_limit, 4) == 55.8041
    assert round(limits.lower_natural_process_limit, 4) == 45.8159
    assert limits.baseline_size == 10


def test_upper_range_limit_is_d4_times_the_average_moving_range() -> None:
    # 3.267 x 16.9 / 9 = 6.13470 (D4 = 3.267 for n = 2, as NIST tabulates it).
    limits = compute_limits(NIST_FLOW_RATE)

    assert limits.upper_range_limit == pytest.approx(6.13470, abs=5e-6)


def test_sigma_is_the_average_moving_range_over_d2() -> None:
    limits = compute_limits(NIST_FLOW_RATE)

    assert limits.sigma == pytest.approx(1.877778 / 1.128, abs=1e-6)
    assert limits.upper_natural_process_limit == pytest.approx(
        limits.centre_line + 3 * limits.sigma
    )


def test_floor_clips_only_the_lower_limit() -> None:
    # Daily counts 1, 9, 1, 9: mean 5, MR-bar 8, so 5 - 2.66 x 8 < 0 and counts cannot be.
    unclipped = compute_limits([1, 9, 1, 9])
    clipped = compute_limits([1, 9, 1, 9], floor=0)

    assert unclipped.lower_natural_process_limit < 0
    assert clipped.lower_natural_process_limit == 0
    assert clipped.upper_natural_process_limit == unclipped.upper_natural_process_limit


def test_floor_leaves_a_lower_limit_above_it_untouched() -> None:
    limits = compute_limits(NIST_FLOW_RATE, floor=0)

    assert round(limits.lower_natural_process_limit, 4) == 45.8159


@pytest.mark.parametrize("baseline", [[], [42.0]])
def test_a_baseline_needs_two_values(baseline: list[float]) -> None:
    with pytest.raises(ValueError, match="at least 2 values"):
        compute_limits(baseline)


def test_chart_pairs_values_with_timestamps_and_moving_ranges() -> None:
    limits = compute_limits(NIST_FLOW_RATE)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    stamps = [start + timedelta(days=offset) for offset in range(3)]

    chart = build_chart([50.0, 52.5, 51.0], limits, stamps)

    assert chart.points == (
        ChartPoint(50.0, stamps[0]),
        ChartPoint(52.5, stamps[1]),
        ChartPoint(51.0, stamps[2]),
    )
    assert chart.moving_ranges == (2.5, 1.5)
    assert chart.limits is limits
    assert chart.signals == ()


def test_chart_carries_the_signals_of_new_values_against_baseline_limits() -> None:
    limits = compute_limits(NIST_FLOW_RATE)

    chart = build_chart([50.0, 56.0], limits, None)

    assert chart.points[1] == ChartPoint(56.0, None)
    assert SignalHit(BEYOND_LIMIT, 1, 56.0) in chart.signals


def test_chart_refuses_timestamps_that_do_not_pair_with_values() -> None:
    limits = compute_limits(NIST_FLOW_RATE)

    with pytest.raises(ValueError, match="pair up"):
        build_chart([1.0, 2.0], limits, [datetime(2024, 5, 1, tzinfo=UTC)])
