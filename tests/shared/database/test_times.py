from datetime import UTC, datetime, timedelta, timezone

from shared.database.times import as_utc


def test_a_time_read_back_is_utc() -> None:
    naive = datetime(2026, 11, 27, 23, 30)  # as SQLite hands it back
    assert as_utc(naive) == datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    assert as_utc(naive).tzinfo is UTC
    aware = datetime(2026, 11, 28, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(aware) == aware
    assert as_utc(aware).tzinfo is UTC
    already = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    assert as_utc(already) is already
