"""The tail stitch's state taken from the batch's own rows (write_path.tail_state with
``inserted``, the live path's) equals the state read back from the database after the
batch's insert (tail_state without it): the demands, their labels (by source, and an old
label by its id alone), their causes' cases (a stored demand of the customer's, another
customer's, one of the same batch), another copy of a key in the batch, the stored cases;
and a batch with a key stored before (redelivered, or another copy with other values) is
read back, as before. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.metrics.db import audit_sample, sql, write_path
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events, prepare_live
from shared.database.engine import create_engine, session_factory
from shared.events import CausedBy, DemandType, Event
from tests.support.factories import case_event, demand_classified, demand_labelled

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _demand(id: str, customer: str, hours: float, **fields: Any) -> Event:
    return demand_classified(
        id=id, source="s", customer_ref=customer, occurred_at=T0 + hours * HOUR, **fields
    )


def _chase(id: str, customer: str, hours: float, cause: str, **fields: Any) -> Event:
    return _demand(
        id,
        customer,
        hours,
        demand_type=DemandType.FAILURE,
        failure_kind="progress_chasing",
        caused_by=CausedBy(kind="demand", ref=cause),
        **fields,
    )


HISTORY: list[Event] = [
    _demand("h1", "C1", 0, case_ref="K1"),
    _demand("h2", "C2", 0.5),
    _demand("h3", "C3", 1, purpose="repair"),
    _demand("k1", "C7", 1.5, text="first words"),
    # A label before its demand comes: by its source, and an old one by its id alone.
    demand_labelled(id="l1", demand_id="b-lab", demand_source="s", labelled_at=T0),
    demand_labelled(id="l2", demand_id="b-old", demand_source=None, labelled_at=T0),
]
# Every demand new: taken from the batch.
NEW: list[Event] = [
    _chase("b1", "C1", 5, "h1"),  # its cause: a stored demand of its customer's
    _chase("b2", "C2", 5, "h1"),  # its cause: another customer's demand
    _demand("b3", "C3", 5, attributes={"handling_seconds": "75"}),
    _chase("b4", "C3", 6, "b3"),  # its cause: a demand of the batch
    _demand("b-lab", "C4", 5),  # labelled by its source
    _demand("b-old", "C5", 5),  # labelled by an old label
    _demand("b-dup", "C8", 5),  # one key sent by two customers: the later copy kept
    _demand("b-dup", "C9", 6),
    _demand("b6", "C6", 5, team="T1", case_ref="K6"),
]
# A key stored before, in another copy (other words, another purpose, later): read back.
AGAIN: list[Event] = [
    _demand("k1", "C7", 9, text="other words", purpose="repair"),
    _demand("b7", "C7", 9.5),
]


async def _both(sessions: Any, batch: list[Event], dialect: str) -> tuple[Any, Any, set[Any]]:
    """The tail state of the batch's fresh customers read back, and taken from the batch."""
    prepared = prepare_live(batch, dialect)
    assert prepared is not None

    def work(db: sql.SyncDb) -> tuple[Any, Any, set[Any]]:
        known = audit_sample.stored_already(db, prepared.keys)
        write_path.insert_received(db, prepared.rows)
        write_path.lock_customers(db, prepared.customers)
        read = write_path.tail_state(db, prepared.fresh)
        inserted = write_path.Inserted(prepared.rows.demands, known)
        taken = write_path.tail_state(db, prepared.fresh, inserted)
        return read, taken, known

    async with sessions.begin() as session:
        return await sql.run_sync(session, work)


async def test_the_tail_taken_from_the_batch_equals_the_tail_read_back(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    from_batch: list[int] = []
    made = write_path._fresh_from_batch

    def counted(*args: Any) -> Any:
        from_batch.append(1)
        return made(*args)

    monkeypatch.setattr(write_path, "_fresh_from_batch", counted)
    try:
        async with sessions.begin() as session:
            await apply_events(session, HISTORY)
        read, taken, known = await _both(sessions, NEW, engine.dialect.name)
        assert known == set()
        assert from_batch == [1]
        assert taken == read
        # Not vacuous: each case above is in it.
        assert read.cause_cases == {("s", "C1"): {"h1": "K1"}}
        assert {("s", "C4"), ("s", "C5"), ("s", "C8")} <= read.refused
        assert ("s", "C9") not in read.refused
        assert read.demands[("s", "C9")]
        assert read.received[("s", "b3")].handling_micros is not None
        assert read.cases[("s", "C1")]
        assert read.demands[("s", "C3")]

        read, taken, known = await _both(sessions, AGAIN, engine.dialect.name)
        assert known == {("s", "k1")}
        assert from_batch == [1]
        assert taken == read
    finally:
        await engine.dispose()


async def test_the_keys_stored_before_are_found_after_the_insert(sqlite_url: str) -> None:
    """insert_new_received (SQLite's live path) stores what insert_received stores and
    answers which demands were stored before the batch as audit_sample.stored_already
    answers before the insert: none for new demands (without asking), and for a batch with
    redelivered demands (one with a new case event), another copy of a stored key and a key
    twice, those stored before; and whether the insert added every demand row."""
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as session:
            await apply_events(session, HISTORY)
        batches: list[list[Event]] = [
            NEW,
            # A redelivered demand and a new case event: the demands' own count is 0 of 1
            # (not the case event's 1, which would answer "none stored before").
            [HISTORY[1], case_event(id="e1", source="s", customer_ref="C2", occurred_at=T0)],
            [*AGAIN, HISTORY[0], _demand("b-new", "C1", 9), AGAIN[1]],
        ]
        for batch in batches:
            prepared = prepare_live(batch, "sqlite")
            assert prepared is not None

            def work(db: sql.SyncDb, prepared: Any = prepared) -> tuple[set[Any], Any]:
                assert isinstance(db, sql.SqliteDb)
                asked = audit_sample.stored_already(db, prepared.keys)
                return asked, write_path.insert_new_received(db, prepared.rows, prepared.keys)

            async with sessions.begin() as session:
                asked, (answered, complete) = await sql.run_sync(session, work)
            assert answered == asked
            # One writer: the insert added every demand row exactly when none was stored.
            assert complete == (not asked)
            stored = await _demand_rows(sessions)
            assert {(r[0], r[1]) for r in stored} >= set(prepared.keys)
        assert asked == {("s", "k1"), ("s", "h1")}
        # The first copy stays (insert-or-ignore).
        assert ("s", "k1", "C7", "billing") in {(r[0], r[1], r[2], r[8]) for r in stored}
    finally:
        await engine.dispose()


async def _demand_rows(sessions: Any) -> list[Any]:
    def read(db: sql.SyncDb) -> list[Any]:
        columns = ", ".join(write_path.DEMAND_COLUMNS)
        return db.rows(f"SELECT {columns} FROM demands")

    async with sessions() as session:
        return await sql.run_sync(session, read)
