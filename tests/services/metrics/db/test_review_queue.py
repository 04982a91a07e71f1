"""The review queue kept by the write path (db/review_entries.py) answers as the query over
every demand it replaced did, on SQLite and PostgreSQL: the same count and the same items
in the same order for every threshold and filter, after demands, labels (before and after
their demand, of every reason, one without a source), an audit sample that grows and then
drops items, and the purge; and migration 0015 fills it from the rows stored before."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import exists, func, insert, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.audit import AuditPolicy, QueuePolicy, QueueTextPurge
from services.metrics.db import queues, review_entries
from services.metrics.db.migrate import upgrade
from services.metrics.db.sql import as_utc, same_demand
from services.metrics.db.tables import (
    AuditItemRow,
    Demand,
    LabelRow,
    QueueTextRow,
    ReviewQueueRow,
)
from services.metrics.db.write_path import demand_row
from services.metrics.domain.audit import AuditPlan, week_start
from services.metrics.ingest import apply_events
from services.metrics.metrics import MetricsServiceMetrics
from shared.database.engine import create_engine, session_factory
from shared.events import DemandType, Event
from tests.support.factories import demand_classified, demand_labelled

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = datetime.combine(week_start(NOW) - timedelta(days=7), datetime.min.time(), UTC)
POLICY = AuditPolicy(
    # The sample's probability falls as its stratum grows: items drawn early leave it.
    plan=AuditPlan(rate=0.02, min_per_week=4, max_per_week=4, key="review-queue-test"),
    queues=QueuePolicy(review_below=0.6, retention_days=30),
)
PURPOSES = ("billing", "repairs")


async def _scanned(
    session: AsyncSession,
    *,
    below: float,
    purpose: str | None,
    limit: int,
    source: str | None,
) -> tuple[int, list[queues.ReviewQueueRow]]:
    """The query the kept queue replaced (queues.review_queue at 47c10c1), word for word:
    every demand searched for the unsure, unlabelled ones that are not audit items."""
    conditions: list[Any] = [
        or_(Demand.needs_review.is_(True), Demand.confidence < below),
        not_(exists().where(same_demand(LabelRow, Demand, source="demand_source"))),
        not_(exists().where(same_demand(AuditItemRow, Demand))),
    ]
    if purpose is not None:
        conditions.append(Demand.purpose == purpose)
    if source is not None:
        conditions.append(Demand.source == source)
    joined: Any = select(Demand.demand_id).join(QueueTextRow, same_demand(QueueTextRow, Demand))
    total = (
        await session.execute(
            select(func.count()).select_from(joined.where(*conditions).subquery())
        )
    ).scalar()
    statement = (
        select(
            Demand.source,
            Demand.demand_id,
            Demand.channel,
            Demand.occurred_at,
            QueueTextRow.text,
            Demand.purpose,
            Demand.demand_type,
            Demand.failure_kind,
            Demand.confidence,
            Demand.needs_review,
            Demand.model_version,
        )
        .join(QueueTextRow, same_demand(QueueTextRow, Demand))
        .where(*conditions)
        .order_by(Demand.confidence, Demand.occurred_at, Demand.source, Demand.demand_id)
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return int(total or 0), [
        queues.ReviewQueueRow(s, d, c, as_utc(at), t, p, kind, fk, float(conf), bool(nr), mv)
        for s, d, c, at, t, p, kind, fk, conf, nr, mv in rows
    ]


async def _same_as_the_scan(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Every threshold and filter answered as the scan answers; the entries as recomputed.
    The number of demands waiting at the default threshold."""
    async with sessions() as session:
        kept = set((await session.execute(select(ReviewQueueRow))).scalars())
        entries = {
            (r.source, r.demand_id, r.purpose, r.confidence, r.needs_review, as_utc(r.occurred_at))
            for r in kept
        }
        recomputed = {
            (s, d, p, c, bool(n), as_utc(at))
            for s, d, p, c, n, at in (await session.execute(review_entries.members())).all()
        }
        assert entries == recomputed
        for below in (0.0, 0.3, 0.6, 0.95):
            for purpose in (None, *PURPOSES, "nothing of that purpose"):
                for source in (None, "demo", "genesys"):
                    for limit in (1, 3, 500):
                        answered = await queues.review_queue(
                            session, below=below, purpose=purpose, limit=limit, source=source
                        )
                        scanned = await _scanned(
                            session, below=below, purpose=purpose, limit=limit, source=source
                        )
                        assert answered == scanned, (below, purpose, limit, source)
        waiting, _items = await queues.review_queue(session, below=0.6, purpose=None, limit=1)
        return waiting


def _demands(count: int, *, start: int = 0) -> list[Event]:
    found: list[Event] = []
    for i in range(start, start + count):
        found.append(
            demand_classified(
                id=f"d-{i:03}",
                source="genesys" if i % 5 == 0 else "demo",
                customer_ref=f"C-{i % 17}",
                occurred_at=T0 + timedelta(hours=10, minutes=i % 23),
                received_at=NOW - timedelta(days=40 if i % 11 == 0 else 1),
                text=f"the words of d-{i:03}",
                purpose=PURPOSES[i % 2],
                demand_type=DemandType.FAILURE if i % 3 == 0 else DemandType.VALUE,
                failure_kind="not_done" if i % 3 == 0 else None,
                # Ties in confidence (and in time) so that the order's later keys decide.
                confidence=(i % 7) / 7,
                needs_review=i % 13 == 0,
            )
        )
    return found


def _label(demand_id: str, source: str | None, reason: str) -> Event:
    return demand_labelled(
        id=f"l-{demand_id}-{reason}-{source}",
        demand_id=demand_id,
        demand_source=source,
        reason=reason,
        labelled_at=NOW,
    )


async def _apply(sessions: async_sessionmaker[AsyncSession], events: Sequence[Event]) -> None:
    for start in range(0, len(events), 7):
        async with sessions.begin() as session:
            await apply_events(session, events[start : start + 7], POLICY)


async def test_the_kept_queue_answers_as_the_scan_of_every_demand(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        # Labels before their demands: one for review, one without a source (it names the
        # demand of the empty source, so demo's d-002 still waits), one for another source.
        early = [
            _label("d-001", "demo", "review"),
            _label("d-002", None, "correction"),
            _label("d-003", "genesys", "review"),
        ]
        await _apply(sessions, early)
        await _apply(sessions, _demands(30))
        first = await _same_as_the_scan(sessions)
        assert first > 10
        # Another source with ids of its own and one demo has, sure and unsure alike.
        await _apply(sessions, [
            demand_classified(id=f"d-{i:03}", source="genesys", customer_ref="G-1",
                              occurred_at=T0 + timedelta(hours=11), text="theirs",
                              purpose="billing", confidence=0.1 * (i % 10))
            for i in range(4, 12)
        ])  # fmt: skip
        # Labels after their demands, of every reason; a redelivered demand.
        async with sessions() as session:
            waiting = (await queues.review_queue(session, below=0.6, purpose=None, limit=6))[1]
        labels = [_label(item.demand_id, item.source, "review") for item in waiting[:3]]
        labels += [_label(item.demand_id, item.source, "correction") for item in waiting[3:5]]
        await _apply(sessions, [*labels, *_demands(3, start=8)])
        assert await _same_as_the_scan(sessions) < first + 8
        # The stratum grows: the audit's probability falls and early items leave the sample
        # (and wait for review again, when unsure).
        async with sessions() as session:
            before = set((await session.execute(select(AuditItemRow.demand_id))).scalars())
        await _apply(sessions, _demands(90, start=30))
        async with sessions() as session:
            after = set((await session.execute(select(AuditItemRow.demand_id))).scalars())
        assert before - after, "no audit item left the sample: the test proves less"
        await _same_as_the_scan(sessions)
        audit_labels = [_label(d, "demo", "audit") for d in sorted(after)[:2]]
        await _apply(sessions, audit_labels)
        await _same_as_the_scan(sessions)
        purge = QueueTextPurge(
            sessions=sessions,
            policy=POLICY.queues,
            interval_s=3600,
            metrics=MetricsServiceMetrics(CollectorRegistry()),
        )
        await purge.purge_once(NOW)
        await _same_as_the_scan(sessions)
        await purge.purge_once(NOW + timedelta(days=31))
        assert await _same_as_the_scan(sessions) == 0
    finally:
        await engine.dispose()


async def test_migration_0015_fills_the_queue_from_the_rows_stored(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0014")
    engine = create_engine(database_url)
    at = T0 + timedelta(hours=9)
    try:
        async with session_factory(engine).begin() as session:
            for i, (source, confidence) in enumerate(
                [("demo", 0.1), ("demo", 0.2), ("demo", 0.3), ("demo", 0.9), ("genesys", 0.1)]
            ):
                event = demand_classified(
                    id=f"d{i}", source=source, occurred_at=at, confidence=confidence
                )
                session.add(Demand(**demand_row(event)))
                if i != 2:  # d2's words are not kept
                    session.add(
                        QueueTextRow(source=source, demand_id=f"d{i}", text="w", received_at=at)
                    )
            # Core, of the columns 0014 has: the ORM would also read back later columns.
            await session.execute(
                insert(LabelRow).values(
                    demand_source="demo", label_id="l1", demand_id="d0", demand_type="value",
                    purpose="billing", labelled_by="s", labelled_at=at, reason="review",
                )
            )  # fmt: skip
            session.add(
                AuditItemRow(
                    source="demo", demand_id="d1", purpose="billing", week_start=week_start(at),
                    draw=0.1, machine_demand_type="value", model_version="m",
                )
            )  # fmt: skip
        await asyncio.to_thread(upgrade, database_url)
        async with session_factory(engine)() as session:
            kept = (
                await session.execute(
                    select(ReviewQueueRow.source, ReviewQueueRow.demand_id).order_by(
                        ReviewQueueRow.source, ReviewQueueRow.demand_id
                    )
                )
            ).all()
            # d3 is sure (0.9) but kept: whether it waits is the reader's test.
            assert [tuple(row) for row in kept] == [("demo", "d3"), ("genesys", "d4")]
            assert (await queues.review_queue(session, below=0.6, purpose=None, limit=5))[0] == 1
    finally:
        await engine.dispose()
