from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.capability import (
    FAILURE_SHARE_PER_DAY,
    baseline_start,
    daily_failure_share_series,
    daily_volume_series,
    xmr_chart,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)
DAY = timedelta(days=1)


def series(values: list[float]) -> list[tuple[datetime, float]]:
    return [(T0 + i * DAY, value) for i, value in enumerate(values)]


def test_limits_come_from_the_baseline_points_only() -> None:
    # Baseline 10, 12, 11, 13: centre 11.5, moving ranges 2, 1, 2 -> mR-bar 5/3;
    # UNPL = 11.5 + 2.66 x 5/3 = 15.9333. The later 30 is judged, not averaged in.
    chart = xmr_chart("m", series([10, 12, 11, 13, 30]), baseline_points=4, shown_points=10)

    assert chart is not None
    assert chart.centre_line == pytest.approx(11.5)
    assert chart.upper_natural_process_limit == pytest.approx(11.5 + 2.66 * 5 / 3)
    assert chart.baseline_to == T0 + 3 * DAY
    assert chart.provisional is False
    assert [(s.rule, s.at) for s in chart.signals if s.rule == "beyond_limit"] == [
        ("beyond_limit", T0 + 4 * DAY)
    ]


def test_a_short_baseline_is_provisional_and_one_point_is_no_chart() -> None:
    assert xmr_chart("m", series([5.0]), baseline_points=4, shown_points=10) is None
    chart = xmr_chart("m", series([5.0, 7.0]), baseline_points=4, shown_points=10)
    assert chart is not None
    assert chart.provisional is True


def test_only_the_most_recent_points_are_shown() -> None:
    chart = xmr_chart("m", series([1, 2, 3, 4, 5]), baseline_points=2, shown_points=2)

    assert chart is not None
    assert [p.value for p in chart.points] == [4, 5]
    assert chart.points[0].moving_range == 1


def test_daily_volume_fills_quiet_days_with_zero() -> None:
    moments = [(T0, "value"), (T0, "failure"), (T0 + 3 * DAY, "value")]

    assert [v for _d, v in daily_volume_series(moments, "value", since=None)] == [1, 0, 0, 1]
    assert [v for _d, v in daily_volume_series(moments, "value", since=T0 + 2 * DAY)] == [0, 1]


def test_the_baseline_starts_at_the_latest_change_already_made() -> None:
    now = T0 + 10 * DAY
    assert baseline_start([T0 + DAY, T0 + 5 * DAY, T0 + 20 * DAY], now) == T0 + 5 * DAY
    assert baseline_start([], now) is None


def test_daily_failure_share_counts_only_days_with_value_or_failure_demand() -> None:
    # Day 0: 1 failure of 4 -> 0.25; day 1: 1 of 2 -> 0.5; day 2 quiet and day 4 only
    # unknown demand: no share (0/0), no point; day 3: 4 value -> 0.0; day 5: 3 of 4 -> 0.75.
    moments = (
        [(T0, "failure")] + [(T0 + i * DAY / 8, "value") for i in (1, 2, 3)]
        + [(T0 + DAY, "failure"), (T0 + DAY, "value"), (T0 + DAY, "unknown")]
        + [(T0 + 3 * DAY, "value")] * 4
        + [(T0 + 4 * DAY, "unknown")]
        + [(T0 + 5 * DAY, "failure")] * 3 + [(T0 + 5 * DAY, "value")]
    )  # fmt: skip

    shares = daily_failure_share_series(moments, since=None)

    assert shares == [(T0, 0.25), (T0 + DAY, 0.5), (T0 + 3 * DAY, 0.0), (T0 + 5 * DAY, 0.75)]
    assert daily_failure_share_series(moments, since=T0 + 2 * DAY + DAY / 2) == [
        (T0 + 3 * DAY, 0.0),
        (T0 + 5 * DAY, 0.75),
    ]
    assert daily_failure_share_series([], since=None) == []


def test_the_daily_failure_share_chart_worked_by_hand() -> None:
    # Shares 0.25, 0.5, 0.0, 0.75: centre 1.5 / 4 = 0.375; moving ranges 0.25, 0.5, 0.75 ->
    # mR-bar 0.5; UNPL 0.375 + 2.66 x 0.5 = 1.705; LNPL 0.375 - 1.33 < 0 -> 0; URL
    # 3.268 x 0.5 = 1.634. The baseline is the first three days: centre 0.25, mR-bar 0.375,
    # UNPL 0.25 + 0.9975 = 1.2475 when baseline_points=3.
    shares = [(T0, 0.25), (T0 + DAY, 0.5), (T0 + 3 * DAY, 0.0), (T0 + 5 * DAY, 0.75)]

    chart = xmr_chart(FAILURE_SHARE_PER_DAY, shares, baseline_points=20, shown_points=100)
    assert chart is not None
    assert chart.measure == "failure_share_per_day"
    assert chart.centre_line == pytest.approx(0.375)
    assert chart.upper_natural_process_limit == pytest.approx(1.705)
    assert chart.lower_natural_process_limit == 0.0
    assert chart.upper_range_limit == pytest.approx(1.634)
    assert [p.moving_range for p in chart.points] == [None, 0.25, 0.5, 0.75]
    assert chart.provisional is True
    assert chart.signals == []

    fixed = xmr_chart(FAILURE_SHARE_PER_DAY, shares, baseline_points=3, shown_points=100)
    assert fixed is not None
    assert fixed.centre_line == pytest.approx(0.25)
    assert fixed.upper_natural_process_limit == pytest.approx(1.2475)
    assert fixed.baseline_to == T0 + 3 * DAY
    assert fixed.provisional is False
