"""Times read back from the databases: every time is stored in UTC, and SQLite hands them back
without an offset."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """``moment`` as read back, in UTC: a naive one (SQLite's) is UTC, an aware one is
    converted."""
    zone = moment.tzinfo
    if zone is UTC:
        return moment
    return moment.replace(tzinfo=UTC) if zone is None else moment.astimezone(UTC)
