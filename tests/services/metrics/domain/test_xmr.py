from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.domain.signals import BEYOND_LIMIT, SignalHit
from services.metrics.domain.xmr import ChartPoint, build_chart, compute_limits

# Published worked example, spc-plotly README (https://pypi.org/project/spc-plotly/), which
# uses Wheeler's factors 2.66 and 3.268: 38 monthly counts, printed results
#   mR_xmr_func 571.8918918918919, mR_upper_limit 1868.9427027027025,
#   y_xmr_func 2820.6315789473683, npl_upper_limit 4341.864011379801.
# Hand check: the 37 moving ranges sum to 21160, 21160 / 37 = 571.89189...; the counts sum
# to 107184, 107184 / 38 = 2820.63157...; 2820.63157 + 2.66 x 571.89189 = 4341.86401.
PUBLISHED_MONTHLY_COUNTS = [
    2478, 2350, 2485, 2296, 2359, 2567, 3089, 2668, 1788, 2854,
    2365, 1883, 1959, 1927, 2640, 2626, 2144, 2409, 4412, 3287,
    3049, 3364, 3078, 2972, 3415, 2753, 3102, 2191, 3693, 4385,
    4699, 3031, 2659, 3885, 2628, 2621, 3071, 2002,
]  # fmt: skip

# statprocon README (https://pypi.org/project/statprocon/), after Wheeler's "Making Sense of
# Data": counts 10, 50, 40, 30 give centre 32.5, mR-bar 20, UNPL 85.7, LNPL -20.7, URL 65.36.
STATPROCON_COUNTS = [10.0, 50.0, 40.0, 30.0]

# NIST/SEMATECH e-Handbook 6.3.2.2 flow-rate data: NIST uses the unrounded 3 / 1.128 and
# prints UCL 55.8041; with Wheeler's 2.66 the limit is 50.81 + 2.66 x 1.87778 = 55.8049.
NIST_FLOW_RATE = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1]


def test_limits_reproduce_the_published_spc_plotly_example_exactly() -> None:
    limits = compute_limits(PUBLISHED_MONTHLY_COUNTS)

    assert limits.average_moving_range == pytest.approx(571.8918918918919, rel=1e-15)
    assert limits.upper_range_limit == pytest.approx(1868.9427027027025, rel=1e-15)
    assert limits.centre_line == pytest.approx(2820.6315789473683, rel=1e-15)
    assert limits.upper_natural_process_limit == pytest.approx(4341.864011379801, rel=1e-15)
    assert limits.baseline_size == 38


def test_limits_reproduce_the_published_statprocon_example() -> None:
    limits = compute_limits(STATPROCON_COUNTS)

    assert limits.centre_line == 32.5
    assert limits.average_moving_range == 20.0
    assert round(limits.upper_natural_process_limit, 2) == 85.7
    assert round(limits.lower_natural_process_limit, 2) == -20.7
    assert round(limits.upper_range_limit, 2) == 65.36


def test_the_nist_example_differs_only_by_the_rounding_of_the_factor() -> None:
    limits = compute_limits(NIST_FLOW_RATE)

    assert round(limits.centre_line, 2) == 50.81
    assert round(limits.average_moving_range, 4) == 1.8778
    assert round(limits.upper_natural_process_limit, 4) == 55.8049
    assert round(limits.lower_natural_process_limit, 4) == 45.8151


def test_sigma_puts_the_three_sigma_line_on_the_natural_process_limit() -> None:
    limits = compute_limits(NIST_FLOW_RATE)

    assert limits.upper_natural_process_limit == pytest.approx(
        limits.centre_line + 3 * limits.sigma
    )


def test_floor_clips_only_the_lower_limit() -> None:
    # Daily counts 1, 9, 1, 9: mean 5, MR-bar 8, so 5 - 2.66 x 8 < 0 and counts cannot be.
    unclipped = compute_limits([1, 9, 1, 9])
    clipped = compute_limits([1, 9, 1, 9], floor=0)

    assert unclipped.lower_natural_process_limit == pytest.approx(5 - 2.66 * 8)
    assert clipped.lower_natural_process_limit == 0
    assert clipped.upper_natural_process_limit == unclipped.upper_natural_process_limit


def test_floor_leaves_a_lower_limit_above_it_untouched() -> None:
    limits = compute_limits(NIST_FLOW_RATE, floor=0)

    assert round(limits.lower_natural_process_limit, 4) == 45.8151


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
