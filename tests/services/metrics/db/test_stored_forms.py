"""The write path's own forms of what it stores, against the slower ones they stand for: a
time as SQLAlchemy writes it on SQLite (format_time), and an opened case's stored values
built straight from the case (_case_stored) as _case_values builds them by column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

from services.metrics.db.sql import format_time, parse_time
from services.metrics.db.write_path import _case_stored, _case_values
from services.metrics.domain.cases import ABANDONED, FULFILLED, OPEN, Case

_WRITE = DateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_TIMES = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=_OFFSETS
)


class _Decoded(BaseModel):
    at: datetime


def _sqlalchemy(moment: datetime) -> str:
    """What SQLAlchemy's SQLite DateTime writes of the moment's UTC time."""
    assert _WRITE is not None
    written: str = _WRITE(moment.astimezone(UTC).replace(tzinfo=None))
    return written


@given(_TIMES)
def test_a_time_is_written_as_sqlalchemy_writes_its_utc_time(moment: datetime) -> None:
    assert format_time(moment) == _sqlalchemy(moment)
    assert parse_time(format_time(moment)) == moment
    # A decoded event's zone is pydantic's TzInfo, not datetime.timezone.
    decoded = _Decoded.model_validate_json(_Decoded(at=moment).model_dump_json()).at
    assert type(decoded.tzinfo) is not timezone
    assert format_time(decoded) == _sqlalchemy(moment)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_a_time_without_a_zone_is_written_as_it_is(moment: datetime) -> None:
    assert _WRITE is not None
    assert format_time(moment) == _WRITE(moment)


_CASE_TIMES = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)


@st.composite
def _cases(draw: st.DrawFn) -> Case:
    started = draw(_CASE_TIMES)
    status = draw(st.sampled_from([OPEN, FULFILLED, ABANDONED]))
    demands = draw(st.lists(st.sampled_from(["d1", "d2", "d3"]), max_size=3, unique=True))
    return Case(
        case_id=draw(st.sampled_from(["K1", "auto-d1"])),
        customer_ref="C",
        case_ref=draw(st.sampled_from([None, "K1"])),
        purpose=draw(st.sampled_from([None, "billing"])),
        status=status,
        started_at=started,
        fulfilled_at=draw(st.sampled_from([None, started + timedelta(hours=3)])),
        reopened=draw(st.integers(0, 2)),
        demand_ids=tuple(demands),
        failure_contacts=draw(st.integers(0, len(demands))),
        channels=tuple(sorted(draw(st.sets(st.sampled_from(["email", "phone"]))))),
        first_channel=draw(st.sampled_from([None, "phone"])),
        team=draw(st.sampled_from([None, "north"])),
        last_activity_at=started + timedelta(hours=draw(st.integers(0, 5))),
    )


@given(_cases())
def test_an_opened_cases_stored_values_are_its_row_by_column(case: Case) -> None:
    assert _case_stored(case, "src", format_time) == _case_values(case, "src", format_time)[1]


@given(st.lists(st.tuples(_TIMES, st.sampled_from(["aware", "decoded", "naive"])), min_size=2))
def test_times_of_mixed_zones_in_a_row_are_each_written_in_their_own(
    times: list[tuple[datetime, str]],
) -> None:
    # format_time keeps the last fixed zone's offset: a time of another zone, or of none,
    # after it is written with its own.
    assert _WRITE is not None
    for moment, form in times:
        if form == "naive":
            naive = moment.replace(tzinfo=None)
            assert format_time(naive) == _WRITE(naive)
            continue
        if form == "decoded":
            moment = _Decoded.model_validate_json(_Decoded(at=moment).model_dump_json()).at
        assert format_time(moment) == _sqlalchemy(moment)


def test_a_zone_whose_offset_changes_with_the_date_is_asked_every_time() -> None:
    # format_time keeps the offset of the last fixed zone (pydantic's TzInfo, datetime's
    # timezone); one zone object whose offset moves with summer time must never be kept.
    london = ZoneInfo("Europe/London")
    for moment in (
        datetime(2026, 1, 15, 12, tzinfo=london),  # GMT
        datetime(2026, 7, 15, 12, tzinfo=london),  # BST, the same zone object
        datetime(2026, 7, 15, 12, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 15, 12, tzinfo=london),
    ):
        assert format_time(moment) == _sqlalchemy(moment)
    assert format_time(datetime(2026, 7, 15, 12, tzinfo=london)) == "2026-07-15 11:00:00.000000"
