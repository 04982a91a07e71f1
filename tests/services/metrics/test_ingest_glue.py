"""The live batch's glue, against what it stands for: the events sorted by kind in one pass
(ingest.by_kind) as the four isinstance filters sorted them, and sqlite3's binding of None
and bools through registered adapters (sql.bind_plainly) as it bound them without."""

from __future__ import annotations

import sqlite3
from typing import Any

from services.metrics.db.sql import SqliteDb, bind_plainly
from services.metrics.ingest import by_kind
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


def _stored(connection: sqlite3.Connection, values: tuple[Any, ...]) -> list[Any]:
    connection.execute("DELETE FROM t")
    SqliteDb(connection).insert_rows("t", ("a", "b", "c", "d"), [values])
    return connection.execute(
        "SELECT typeof(a), a, typeof(b), b, typeof(c), c, d FROM t"
    ).fetchall()


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
