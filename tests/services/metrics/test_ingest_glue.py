"""The live batch's glue, against what it stands for: the events sorted by kind in one pass
(ingest.by_kind) as the four isinstance filters sorted them, sqlite3's binding of None
and bools through registered adapters (sql.bind_plainly) as it bound them without, and
why_unstorable, which knows pydantic's and datetime's zones by their class, as to_utc
judges each time."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.db.sql import SqliteDb, bind_plainly
from services.metrics.domain.windows import OutOfRange, to_utc
from services.metrics.ingest import by_kind, demand_keys, new_demands, why_unstorable
from shared.events import CaseEvent, DemandClassified, DemandLabelled, Event, SystemChanged
from tests.support.factories import (
    case_event,
    demand_classified,
    demand_labelled,
    system_changed,
)


class _LaterDemand(DemandClassified):
    """A subclass: sorted as the class it extends, as isinstance sorts it."""


def _as_filtered(events: list[Event]) -> tuple[list[Any], ...]:
    return tuple(
        [e for e in events if isinstance(e, kind)]
        for kind in (DemandClassified, CaseEvent, DemandLabelled, SystemChanged)
    )


def test_by_kind_sorts_as_the_isinstance_filters_did() -> None:
    demand = demand_classified()
    later = _LaterDemand.model_validate(demand_classified().model_dump())
    events: list[Event] = [
        case_event(),
        demand,
        demand_labelled(),
        system_changed(),
        later,
        case_event(),
        demand_classified(),
        demand_labelled(),
    ]
    sorted_ = by_kind(events)
    assert sorted_ == _as_filtered(events)
    assert [type(e) for e in sorted_[0]] == [DemandClassified, _LaterDemand, DemandClassified]
    assert by_kind([]) == ([], [], [], [])


_READ = "SELECT typeof(a), a, typeof(b), b, typeof(c), c, d FROM {}"


def test_demand_keys_are_the_keys_customers_and_new_demands_in_one_pass() -> None:
    demands = [
        demand_classified(id=f"d{n}", customer_ref=f"C{n % 4}", source=f"s{n % 2}")
        for n in range(12)
    ]
    demands.append(demands[3])  # a second copy of a key
    moved = {("s0", "C0"), ("s1", "C3"), ("s9", "C1")}
    keys, customers, fresh = demand_keys(demands, moved)
    assert keys == [(d.demand.source, d.demand.id) for d in demands]
    assert customers == {(d.demand.source, d.demand.customer_ref) for d in demands}
    expected = new_demands(demands, moved)
    assert fresh == expected
    assert list(fresh) == list(expected)
    assert demand_keys([], moved) == ([], set(), {})


def _stored(connection: sqlite3.Connection, values: tuple[Any, ...]) -> list[Any]:
    connection.execute("DELETE FROM t")
    SqliteDb(connection).insert_rows("t", ("a", "b", "c", "d"), [values])
    return connection.execute(_READ.format("t")).fetchall()


def test_none_and_bools_are_bound_through_adapters_as_they_were_without() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (a, b, c, d BOOLEAN)")
    values = (None, True, False, True)
    # As sqlite3 binds them with no adapter of its own: NULL, 1 and 0 as integers.
    adapters = dict(sqlite3.adapters)
    for kind in (type(None), bool):
        sqlite3.adapters.pop((kind, sqlite3.PrepareProtocol), None)
    try:
        connection.execute("CREATE TABLE plain (a, b, c, d BOOLEAN)")
        connection.execute("INSERT INTO plain VALUES (?, ?, ?, ?)", values)
        plain = connection.execute(_READ.format("plain")).fetchall()
    finally:
        sqlite3.adapters.clear()
        sqlite3.adapters.update(adapters)
    assert plain == [("null", None, "integer", 1, "integer", 0, 1)]
    assert _stored(connection, values) == plain
    # The write path's connection binds them through the adapters, found at once.
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    assert sqlite3.adapters[(bool, sqlite3.PrepareProtocol)] is int
    bind_plainly()  # again: nothing changes
    assert _stored(connection, values) == plain


_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=_OFFSETS)
    | st.sampled_from(
        [
            datetime(1, 1, 1, 3, tzinfo=timezone(timedelta(hours=14))),
            datetime(9999, 12, 31, 22, tzinfo=timezone(timedelta(hours=-14))),
        ]
    ),
    st.booleans(),
)
def test_a_time_is_refused_exactly_when_utc_cannot_hold_it(moment: datetime, decoded: bool) -> None:
    event = demand_classified(occurred_at=moment)  # its other times are the same moment
    if decoded:  # the zone as the live path has it: pydantic's TzInfo
        event = DemandClassified.model_validate_json(event.model_dump_json())
        assert type(event.demand.occurred_at.tzinfo) is not timezone
    try:
        to_utc(moment)
        expected = None
    except OutOfRange as error:
        expected = f"demand.occurred_at: {error}"
    why = why_unstorable(event)
    assert (why is None) == (expected is None)
    if expected is not None and why is not None:
        assert why.split(":")[0] == "demand.occurred_at"
