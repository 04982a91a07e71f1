from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.metrics.domain.windows import (
    Granularity,
    Period,
    daily_counts,
    parse_period,
    period_counts,
    period_start,
    utc_day,
)

PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE = timezone(timedelta(hours=-5))


def test_a_utc_plus_two_timestamp_after_local_midnight_lands_on_the_previous_utc_day() -> None:
    # 00:30 on 2 May at UTC+2 is 22:30 on 1 May UTC.
    assert utc_day(datetime(2024, 5, 2, 0, 30, tzinfo=PLUS_TWO)) == date(2024, 5, 1)


def test_a_utc_minus_five_timestamp_late_evening_lands_on_the_next_utc_day() -> None:
    assert utc_day(datetime(2024, 5, 1, 21, 0, tzinfo=MINUS_FIVE)) == date(2024, 5, 2)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_day(datetime(2024, 5, 1, 12, 0))


def test_daily_counts_include_the_zero_days() -> None:
    stamps = [
        datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 17, 0, tzinfo=UTC),
        datetime(2024, 5, 2, 0, 30, tzinfo=PLUS_TWO),  # 1 May in UTC
        datetime(2024, 5, 4, 23, 59, tzinfo=UTC),
        datetime(2024, 4, 30, 23, 59, tzinfo=UTC),  # before the range
        datetime(2024, 5, 6, 0, 0, tzinfo=UTC),  # after the range
    ]

    assert daily_counts(stamps, date(2024, 5, 1), date(2024, 5, 5)) == [
        (date(2024, 5, 1), 3),
        (date(2024, 5, 2), 0),
        (date(2024, 5, 3), 0),
        (date(2024, 5, 4), 1),
        (date(2024, 5, 5), 0),
    ]


def test_daily_counts_with_no_timestamps_are_all_zero() -> None:
    assert daily_counts([], date(2024, 2, 28), date(2024, 3, 1)) == [
        (date(2024, 2, 28), 0),
        (date(2024, 2, 29), 0),
        (date(2024, 3, 1), 0),
    ]


def test_daily_counts_refuse_an_end_before_the_start() -> None:
    with pytest.raises(ValueError, match="before start"):
        daily_counts([], date(2024, 5, 2), date(2024, 5, 1))


def test_weekly_counts_bucket_on_iso_mondays() -> None:
    stamps = [
        datetime(2024, 5, 5, 23, 0, tzinfo=UTC),  # Sunday: week of Monday 29 April
        datetime(2024, 5, 6, 1, 0, tzinfo=PLUS_TWO),  # Sunday 23:00 UTC: same week
        datetime(2024, 5, 6, 0, 0, tzinfo=UTC),  # Monday 6 May
    ]

    assert period_counts(stamps, date(2024, 4, 30), date(2024, 5, 20), Granularity.WEEK) == [
        (date(2024, 4, 29), 2),
        (date(2024, 5, 6), 1),
        (date(2024, 5, 13), 0),
        (date(2024, 5, 20), 0),
    ]


def test_monthly_counts_cross_the_year_end() -> None:
    stamps = [datetime(2024, 12, 31, 23, 0, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)]

    assert period_counts(stamps, date(2024, 12, 15), date(2025, 2, 3), Granularity.MONTH) == [
        (date(2024, 12, 1), 1),
        (date(2025, 1, 1), 0),
        (date(2025, 2, 1), 1),
    ]


def test_period_start_of_a_month() -> None:
    moment = datetime(2024, 6, 1, 1, 0, tzinfo=PLUS_TWO)  # 31 May 23:00 UTC

    assert period_start(moment, Granularity.MONTH) == date(2024, 5, 1)


def _utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2024", _utc(2024, 1, 1), _utc(2025, 1, 1)),
        ("2024-12", _utc(2024, 12, 1), _utc(2025, 1, 1)),
        ("2024-02", _utc(2024, 2, 1), _utc(2024, 3, 1)),
        ("2024-W19", _utc(2024, 5, 6), _utc(2024, 5, 13)),
        ("2025-W01", _utc(2024, 12, 30), _utc(2025, 1, 6)),
        ("2024-05-06", _utc(2024, 5, 6), _utc(2024, 5, 7)),
        ("2024-05-01/2024-06-01", _utc(2024, 5, 1), _utc(2024, 6, 1)),
        ("2024-05-01/P7D", _utc(2024, 5, 1), _utc(2024, 5, 8)),
        ("2024-05-01/P2W", _utc(2024, 5, 1), _utc(2024, 5, 15)),
        (
            "2024-05-01T08:00:00+02:00/2024-05-01T20:00:00Z",
            _utc(2024, 5, 1, 6),
            _utc(2024, 5, 1, 20),
        ),
    ],
)
def test_parse_period(text: str, start: datetime, end: datetime) -> None:
    assert parse_period(text) == Period(start, end)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("May 2024", "unrecognised period"),
        ("2024-13", "invalid period"),
        ("2024-W54", "invalid period"),
        ("2024-05-01T08:00:00/P1D", "naive"),
        ("2024-06-01/2024-05-01", "must end after"),
        ("2024-05-01/tomorrow", "invalid instant"),
    ],
)
def test_parse_period_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_period(text)


def test_period_contains_is_half_open() -> None:
    may = parse_period("2024-05")

    assert may.contains(datetime(2024, 5, 1, 0, 0, tzinfo=UTC))
    assert may.contains(datetime(2024, 6, 1, 1, 59, tzinfo=PLUS_TWO))  # 31 May 23:59 UTC
    assert not may.contains(datetime(2024, 6, 1, 0, 0, tzinfo=UTC))
