"""The live write path stitches a customer's new demands on at the tail (stitch_tail), closes
a case by one case event at the tail (close_at_tail), and recomputes everything else in
full: whatever it took, every derived table equals what a rebuild computes from the same
set of events, and a full recomputation of the live customers afterwards changes nothing.
Random scenarios (seeded): few customers, demands with late and tied times, references,
causes, case events of every type (closing ones often, and often in a batch of their own),
labels (some without a source), redelivered events, in random batches; on SQLite and
PostgreSQL.

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
    referenced: list[tuple[str, str]] = []  # (customer, case reference) of demands so far
    at = T0
    for n in range(rng.randint(10, 40)):
        customer = rng.choice(customers)
        ref = f"{mark}K{rng.randint(0, 2)}"
        at += timedelta(minutes=rng.choice([0, 1, 2, 30, 60, 60, 300, 300]))
        when = at - timedelta(minutes=rng.randint(1, 400)) if rng.random() < 0.1 else at
        roll = rng.random()
        if roll < 0.65:
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
            named = rng.random() < 0.3
            if named:
                referenced.append((customer, ref))
            events.append(
                demand_classified(
                    id=demand_id,
                    source=source,
                    customer_ref=customer,
                    # Often: the case events below then close a case that has demands.
                    case_ref=ref if named else None,
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
        elif roll < 0.93:  # mostly closing (close_at_tail's), of every type
            if referenced and rng.random() < 0.8:  # a case a demand named
                customer, ref = rng.choice(referenced[-4:])
            events.append(
                case_event(
                    id=f"{mark}e{n}",
                    source=source,
                    customer_ref=customer,
                    case_ref=ref,
                    type=rng.choice(
                        [*CaseEventType, *[CaseEventType.FULFILLED] * 4, CaseEventType.ABANDONED]
                    ),
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
        # Often the case events in a batch of their own, after (the usual order live).
        closing: list[Event] = (
            [e for e in batch if isinstance(e, CaseEvent)] if rng.random() < 0.6 else []
        )
        if closing:
            batch = [e for e in batch if not isinstance(e, CaseEvent)] or closing
        if batches and rng.random() < 0.2:
            batch += rng.sample(batches[-1], min(2, len(batches[-1])))  # redelivered
        batches.append(batch)
        if closing and batch is not closing:
            batches.append(closing)
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
) -> tuple[int, int, int]:
    """Returns the customers stitched at the tail, those closed there, and those
    recomputed in full."""
    at_tail = closed = recomputed = 0
    for seed in seeds:
        live, rebuilt = _scenario(seed, "L"), _scenario(seed, "R")
        for batch in _live_batches(seed, live):
            async with sessions.begin() as session:
                outcome = await apply_events(session, batch)
                assert not outcome.refused
            at_tail += outcome.stitched_at_tail
            closed += outcome.closed_at_tail
            recomputed += outcome.recomputed
            # Each customer of the batch one way (a label's customers are the batch's too).
            taken = outcome.stitched_at_tail + outcome.closed_at_tail + outcome.recomputed
            assert taken >= len(_customers(batch)), f"scenario {seed}"
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
    return at_tail, closed, recomputed


async def test_live_batches_stitched_at_the_tail_or_in_full_equal_a_rebuild(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        at_tail, closed, recomputed = await _scenarios_live_and_rebuilt(
            session_factory(engine), range(SCENARIOS)
        )
    finally:
        await engine.dispose()
    # Both ways were taken, each for a good share of the customers (else this tests little).
    assert at_tail > 100, (at_tail, closed, recomputed)
    assert recomputed > 100, (at_tail, closed, recomputed)
    assert closed > 12, (at_tail, closed, recomputed)  # 17 of the seeds, on either database


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


async def test_a_case_closed_at_the_tail_reports_what_the_full_recomputation_does(
    database_url: str,
) -> None:
    """A fulfilment (and an abandonment) in a batch of its own, after its customer's demands:
    closed at the tail, with the newly fulfilled case and the purpose the full recomputation
    of the same events reports. One case was fulfilled and reopened before: not one-stop. One
    fulfilment comes with a label of the customer's demand: recomputed in full."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)

    def events(
        mark: str, customer: str, closing: CaseEventType, reopened: bool, label: bool
    ) -> tuple[list[Event], list[Event]]:
        """The events before, each in a batch of its own, and the last batch."""
        source = f"y{mark}"
        before: list[Event] = [
            demand_classified(id=f"{mark}{customer}d{n}", source=source,
                              customer_ref=f"{customer}", case_ref=f"{customer}K",
                              occurred_at=T0 + timedelta(hours=n), purpose="repair",
                              channel=Channel.EMAIL)
            for n in ((1,) if reopened else (1, 2))
        ]  # fmt: skip
        before += [
            case_event(id=f"{mark}{customer}e{n}", source=source, customer_ref=f"{customer}",
                       case_ref=f"{customer}K", type=moved, occurred_at=T0 + timedelta(hours=n))
            for n, moved in ((2, CaseEventType.FULFILLED), (3, CaseEventType.REOPENED))
            if reopened
        ]  # fmt: skip
        last: list[Event] = [
            case_event(id=f"{mark}{customer}e", source=source, customer_ref=f"{customer}",
                       case_ref=f"{customer}K", type=closing,
                       occurred_at=T0 + timedelta(hours=5), purpose="repair"),
        ]  # fmt: skip
        if label:
            last.append(
                demand_labelled(id=f"{mark}{customer}l", demand_id=f"{mark}{customer}d1",
                                demand_source=source, purpose="billing",
                                labelled_at=T0 + timedelta(hours=6))
            )  # fmt: skip
        return before, last

    try:
        sessions = session_factory(engine)
        for customer, closing, reopened, label in (
            ("F", CaseEventType.FULFILLED, False, False),
            ("A", CaseEventType.ABANDONED, False, False),
            ("R", CaseEventType.FULFILLED, True, False),
            ("L", CaseEventType.FULFILLED, False, True),
        ):
            (tail, tail_last), (full, full_last) = (
                events(m, customer, closing, reopened, label) for m in ("T", "W")
            )
            for batch in zip(tail, full, strict=True):
                async with sessions.begin() as session:
                    await apply_events(session, batch)
            async with sessions.begin() as session:
                at_tail = await apply_events(session, tail_last)
                # The same events stored only, then their customer recomputed in full.
                await apply_events(session, full_last, derive=False)
                whole = await recompute_customers(session, [("yW", customer)])
            assert (at_tail.closed_at_tail, whole.closed_at_tail) == (int(not label), 0)
            assert (at_tail.recomputed, whole.recomputed) == (int(label), 1)
            assert at_tail.newly_fulfilled == whole.newly_fulfilled
            assert at_tail.purposes >= {"repair"}
            assert len(at_tail.newly_fulfilled) == (closing == CaseEventType.FULFILLED)
            if not label:
                assert at_tail.purposes == whole.purposes == {"repair"}
        async with sessions() as session:
            assert await _derived(session, "yT", "T") == await _derived(session, "yW", "W")
    finally:
        await engine.dispose()
