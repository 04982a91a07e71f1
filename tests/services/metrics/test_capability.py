from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.capability import baseline_start, daily_volume_series, xmr_chart

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
