"""The live write path stitches a customer's new demands on at the tail (stitch_tail) and
recomputes everything else in full: whatever it took, every derived table equals what a
rebuild computes from the same set of events, and a full recomputation of the live
customers afterwards changes nothing. Random scenarios (seeded): few customers, demands with
late and tied times, references, causes, case events of every type, labels (some without a
source), redelivered events, in random batches; on SQLite and PostgreSQL.

Each scenario is written twice into one database, under two sources ("live" and
"rebuild"), its ids and references marked the same way, so the two sets of rows compare
once the mark is taken out."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events, recompute_customers
from shared.database.engine import create_engine, session_factory
from shared.events import (
    CaseEvent,
    CaseEventType,
    CausedBy,
    Channel,
    DemandClassified,
    DemandType,
    Event,
)
from tests.support.factories import case_event, demand_classified, demand_labelled

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)  # late in the day: the demands fall on two days
SCENARIOS = 36

# Each derived table, and which of its rows to compare (every row is one source's).
_TABLES = {
    "demand_facts": "source = :s",
    "cases": "source = :s",
    "demand_days": "source = :s",
    "case_days": "source = :s",
    "case_time_days": "source = :s",
    # A count moved back to 0 is kept as 0 (open_cases.move), and read as none.
    "open_case_counts": "source = :s AND cases <> 0",
}


def _scenario(seed: int, mark: str) -> list[Event]:
    """Scenario ``seed``'s events, every id, reference and the source marked ``mark``."""
    rng = random.Random(seed)
    source = f"s{seed}{mark}"
    customers = [f"{mark}C{n}" for n in range(rng.randint(1, 4))]
    events: list[Event] = []
    demand_ids: list[str] = []
    at = T0
    for n in range(rng.randint(10, 40)):
        customer = rng.choice(customers)
        at += timedelta(minutes=rng.choice([0, 1, 2, 30, 60, 60, 300, 300]))
        when = at - timedelta(minutes=rng.randint(1, 400)) if rng.random() < 0.1 else at
        roll = rng.random()
        if roll < 0.82:
            failure = rng.random() < 0.3
            cause = None
            if failure and demand_ids and rng.random() < 0.3:
                cause = (
                    CausedBy(kind="demand", ref=rng.choice(demand_ids))
                    if rng.random() < 0.6
                    else CausedBy(kind="case", ref=f"{mark}K{rng.randint(0, 2)}")
                )
            demand_id = f"{mark}d{n}"
            demand_ids.append(demand_id)
            events.append(
                demand_classified(
                    id=demand_id,
                    source=source,
                    customer_ref=customer,
                    case_ref=f"{mark}K{rng.randint(0, 2)}" if rng.random() < 0.1 else None,
                    occurred_at=when,
                    channel=rng.choice([Channel.PHONE, Channel.EMAIL]),
                    team=rng.choice([None, "T1"]),
                    purpose=rng.choice(["billing", "repair"]),
                    demand_type=DemandType.FAILURE if failure else DemandType.VALUE,
                    failure_kind="not_done_right" if failure else None,
                    caused_by=cause,
                    attributes={"handling_seconds": "90"} if rng.random() < 0.3 else {},
                )
            )
        elif roll < 0.93:
            events.append(
                case_event(
                    id=f"{mark}e{n}",
                    source=source,
                    customer_ref=customer,
                    case_ref=f"{mark}K{rng.randint(0, 2)}",
                    type=rng.choice(list(CaseEventType)),
                    occurred_at=when,
                    purpose=rng.choice([None, "billing", "repair"]),
                )
            )
        elif demand_ids:
            failure = rng.random() < 0.5
            events.append(
                demand_labelled(
                    id=f"{mark}l{n}",
                    # Some of a demand to come: a label may arrive before its demand.
                    demand_id=rng.choice(demand_ids)
                    if rng.random() < 0.7
                    else f"{mark}d{n + rng.randint(1, 3)}",
                    # An old label names no source: it applies to the one demand of its id.
                    demand_source=source if rng.random() < 0.8 else None,
                    purpose=rng.choice(["billing", "repair", "move home"]),
                    demand_type=DemandType.FAILURE if failure else DemandType.VALUE,
                    failure_kind="not_done_right" if failure else None,
                    labelled_at=when,
                )
            )
    # A label or cause may name a demand that comes later, or never: both are kept.
    if rng.random() < 0.3:
        events.append(demand_labelled(id=f"{mark}l-early", demand_id=f"{mark}d999",
                                      demand_source=source, labelled_at=at))  # fmt: skip
    return events


def _live_batches(seed: int, events: Sequence[Event]) -> list[list[Event]]:
    """In order but for some swaps, in batches of 1-8, some events (or whole batches) again."""
    rng = random.Random(seed + 1_000)
    ordered = list(events)
    for _ in range(len(ordered) // 8):
        i = rng.randrange(len(ordered))
        j = min(len(ordered) - 1, i + rng.randint(1, 4))
        ordered[i], ordered[j] = ordered[j], ordered[i]
    batches: list[list[Event]] = []
    while ordered:
        size = rng.randint(1, 8)
        batch, ordered = ordered[:size], ordered[size:]
        if batches and rng.random() < 0.2:
            batch += rng.sample(batches[-1], min(2, len(batches[-1])))  # redelivered
        batches.append(batch)
        if rng.random() < 0.05:
            batches.append(list(batch))  # the whole batch again
    return batches


def _customers(events: Sequence[Event]) -> list[tuple[str, str]]:
    found = {
        (e.demand.source, e.demand.customer_ref) for e in events if isinstance(e, DemandClassified)
    }
    found |= {(e.source or "", e.customer_ref) for e in events if isinstance(e, CaseEvent)}
    return sorted(found)


async def _derived(session: AsyncSession, source: str, mark: str) -> dict[str, set[Any]]:
    """Every derived row of ``source``, the mark taken out of its text."""

    def unmarked(value: Any) -> Any:
        return value.replace(mark, "") if isinstance(value, str) else value

    found = {}
    for table, which in _TABLES.items():
        rows = await session.execute(text(f"SELECT * FROM {table} WHERE {which}"), {"s": source})
        found[table] = {tuple(unmarked(v) for v in row) for row in rows.all()}
    return found


async def _scenarios_live_and_rebuilt(
    sessions: async_sessionmaker[AsyncSession], seeds: range
) -> tuple[int, int]:
    """Returns the customers stitched at the tail and the customer recomputations in all."""
    at_tail = recomputed = 0
    for seed in seeds:
        live, rebuilt = _scenario(seed, "L"), _scenario(seed, "R")
        for batch in _live_batches(seed, live):
            async with sessions.begin() as session:
                outcome = await apply_events(session, batch)
                assert not outcome.refused
            at_tail += outcome.stitched_at_tail
            recomputed += len(_customers(batch))
        # The rebuild: every event stored, then each customer computed once from them all.
        async with sessions.begin() as session:
            await apply_events(session, rebuilt, derive=False)
            await recompute_customers(session, _customers(rebuilt))
        async with sessions() as session:
            live_rows = await _derived(session, f"s{seed}L", "L")
            rebuilt_rows = await _derived(session, f"s{seed}R", "R")
        assert live_rows == rebuilt_rows, f"scenario {seed}"
        assert live_rows["demand_facts"], f"scenario {seed} derived nothing"
        # The live rows are what a full recomputation of the same customers makes.
        async with sessions.begin() as session:
            await recompute_customers(session, _customers(live))
        async with sessions() as session:
            assert await _derived(session, f"s{seed}L", "L") == live_rows, f"scenario {seed}"
    return at_tail, recomputed


async def test_live_batches_stitched_at_the_tail_or_in_full_equal_a_rebuild(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        at_tail, recomputed = await _scenarios_live_and_rebuilt(
            session_factory(engine), range(SCENARIOS)
        )
    finally:
        await engine.dispose()
    # Both ways were taken, each for a good share of the customers (else this tests little).
    assert at_tail > 100, (at_tail, recomputed)
    assert recomputed - at_tail > 100, (at_tail, recomputed)


async def test_a_label_stored_before_its_demand_is_applied_when_the_demand_comes(
    database_url: str,
) -> None:
    """The demand comes after everything stored for its customer, with nothing else in its
    batch, but a label (by its source, or an old one by its id alone) came first: it is
    stitched in full, labelled, as a rebuild makes it."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)

    def events(mark: str) -> list[list[Event]]:
        source = f"x{mark}"
        first, later = (
            demand_classified(id=f"{mark}d{n}", source=source, customer_ref=f"{mark}C",
                              occurred_at=T0 + timedelta(hours=n), purpose="billing")
            for n in (1, 2)
        )  # fmt: skip
        labels: list[Event] = [
            demand_labelled(id=f"{mark}l{n}", demand_id=f"{mark}d2", demand_source=of,
                            purpose="repair", labelled_at=T0 + timedelta(hours=n))
            for n, of in ((1, source), (3, None))
        ]  # fmt: skip
        return [[first], labels[:1], [later], labels[1:]]

    live_batches = events("L")
    later_live = live_batches[2][0]
    try:
        sessions = session_factory(engine)
        for batch in live_batches:
            async with sessions.begin() as session:
                outcome = await apply_events(session, batch)
            if batch[0] is later_live:
                assert outcome.stitched_at_tail == 0
        async with sessions.begin() as session:
            await apply_events(session, [e for b in events("R") for e in b], derive=False)
            await recompute_customers(session, [("xR", "RC")])
        async with sessions() as session:
            live = await _derived(session, "xL", "L")
            assert live == await _derived(session, "xR", "R")
            labelled = await session.execute(
                text("SELECT purpose, labelled FROM demand_facts WHERE demand_id = 'Ld2'")
            )
            assert [(p, bool(flag)) for p, flag in labelled.all()] == [("repair", True)]
    finally:
        await engine.dispose()
