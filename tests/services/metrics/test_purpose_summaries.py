"""purpose_summaries of whole days (every period the API and the pages ask for) is read in one
go on the session's connection, in plain SQL off the daily tables: the same summaries, figure
for figure, as the same filters counted from every row (measures.whole_days forced off, so
each figure takes the statement-at-a-time path: the facts, cases and demands themselves, or
for one purpose the daily tables through SQLAlchemy's statements), over random demands,
fulfilments, relabels and completed audit pairs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from services.metrics import service
from services.metrics.audit import AuditPolicy
from services.metrics.db import audit_sample, measures
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.domain.windows import Period
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, Channel, DemandType, Event
from tests.support.factories import case_event, demand_classified, demand_labelled

pytestmark = pytest.mark.integration

FIRST_DAY = date(2026, 3, 2)  # a Monday: two ISO weeks of strata
DAYS = 10
PURPOSES = ("billing", "repair", "move home")


def _at(rng: random.Random, day: int | None = None) -> datetime:
    start = datetime.combine(FIRST_DAY, time.min, UTC)
    offset = timedelta(days=rng.randrange(DAYS) if day is None else day)
    return (
        start + offset + timedelta(seconds=rng.randrange(86_400), microseconds=rng.randrange(10**6))
    )


def _events(seed: int) -> list[list[Event]]:
    """Demands of two sources, both channels, a team or none; fulfilments on their own days
    (some before the period's start, several in one band), relabels, and audit labels that
    agree or disagree with the machine (the default plan audits every demand of a week
    under its floor)."""
    rng = random.Random(seed)
    demands: list[Event] = []
    for n in range(120):
        customer = n % 37
        kind = rng.choice(list(DemandType))
        demands.append(
            demand_classified(
                id=f"d-{n}", source="alpha" if customer % 4 else "beta",
                customer_ref=f"C-{customer}", case_ref=f"K-{customer}",
                occurred_at=_at(rng, day=rng.randrange(DAYS // 2)),
                channel=Channel.PHONE if rng.random() < 0.6 else Channel.EMAIL,
                team=rng.choice(("north", "south", None)),
                purpose=rng.choice(PURPOSES), demand_type=kind,
                failure_kind="repeat" if kind is DemandType.FAILURE else None,
            )
        )  # fmt: skip
    sources = {e.demand.id: e.demand.source for e in demands}  # type: ignore[attr-defined]
    fulfilments: list[Event] = [
        case_event(
            id=f"e-{c}", source="alpha" if c % 4 else "beta", customer_ref=f"C-{c}",
            case_ref=f"K-{c}", type=CaseEventType.FULFILLED,
            occurred_at=_at(rng, day=DAYS // 2 + rng.randrange(DAYS // 2)),
            purpose=rng.choice(PURPOSES),
        )
        for c in range(37)
        if c % 6
    ]  # fmt: skip
    later = datetime.combine(FIRST_DAY + timedelta(days=DAYS + 1), time.min, UTC)
    labels: list[Event] = [
        demand_labelled(
            id=f"l-{n}-{reason}", demand_id=f"d-{n}", demand_source=sources[f"d-{n}"],
            labelled_at=later + timedelta(minutes=n), reason=reason,
            purpose=rng.choice(PURPOSES), demand_type=rng.choice(list(DemandType)),
        )
        for n in rng.sample(range(120), 60)
        for reason in (rng.choice(("audit", "audit", "correction")),)
    ]  # fmt: skip
    return [demands[:70], fulfilments[:15], demands[70:], fulfilments[15:], labels]


def _filters() -> list[Filters]:
    def day(n: int) -> datetime:
        return datetime.combine(FIRST_DAY + timedelta(days=n), time.min, UTC)

    return [
        Filters(),
        Filters(source="beta"),
        Filters(channel="phone", team="north"),
        Filters(period=Period(day(0), day(DAYS + 2))),
        Filters(period=Period(day(2), day(7)), source="alpha"),
        Filters(period=Period(day(6), day(8)), channel="email"),
        Filters(period=Period(day(7), day(8)), team="south"),
        Filters(period=Period(day(-30), day(-1))),  # nothing in it
    ]


async def test_one_go_of_whole_days_equals_every_row_counted(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        for batch in _events(seed=11):
            async with sessions.begin() as session:
                assert not (await apply_events(session, batch, AuditPolicy())).refused
        found: list[tuple[Any, ...]] = []
        async with sessions() as session:
            for filters in _filters():
                for purpose in (None, *PURPOSES, "none such"):
                    found.append(
                        (
                            filters,
                            purpose,
                            await service.purpose_summaries(session, filters, purpose=purpose),
                        )
                    )
        # The data is what the comparison needs: figures of every kind, audited pairs.
        everything = found[0][2]
        assert {s.purpose for s in everything} == set(PURPOSES)
        assert all(
            s.cases_fulfilled and s.open_cases and s.end_to_end.p85_seconds for s in everything
        )
        assert sum(s.failure_share_audited for s in everything) >= 10
        assert any(s.failure_share_estimate != s.failure_share for s in everything)
        assert any(not summaries for _f, _p, summaries in found)
        # The same filters, counted a statement at a time from the rows.
        for module in (measures, audit_sample):
            monkeypatch.setattr(module, "whole_days", lambda _filters: False)
        async with sessions() as session:
            for filters, purpose, summaries in found:
                again = await service.purpose_summaries(session, filters, purpose=purpose)
                assert summaries == again, (filters, purpose)
    finally:
        await engine.dispose()
