"""The review and audit queues: what waits for a person, and the texts they read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db import review_entries
from services.metrics.db.sql import as_utc, demand_sources, same_demand
from services.metrics.db.tables import (
    AuditItemRow,
    Demand,
    DemandFactRow,
    LabelRow,
    QueueTextRow,
)
from services.metrics.db.tables import ReviewQueueRow as QueueEntry


def _of_source(source: str | None) -> list[Any]:
    # None: the demand of that id in any source (the first by source when several have it),
    # searched by the key per source: the demands have no index by id alone.
    return [Demand.source.in_(demand_sources())] if source is None else [Demand.source == source]


def _audit_labelled() -> Any:
    return exists().where(
        same_demand(LabelRow, AuditItemRow, source="demand_source"), LabelRow.reason == "audit"
    )


@dataclass(frozen=True)
class AuditQueueRow:
    source: str
    demand_id: str
    channel: str
    occurred_at: datetime
    text: str


async def audit_queue(
    session: AsyncSession, *, limit: int, source: str | None = None
) -> tuple[int, list[AuditQueueRow]]:
    """Open audit items (no audit label yet) whose words are still kept, in the order of
    their draw: random, and those most sure to stay in the sample first. Blind: nothing the
    machine said about the demand is read here. ``source``: that source's items only."""
    conditions = [not_(_audit_labelled())]
    if source is not None:
        conditions.append(AuditItemRow.source == source)
    base: Any = (
        select(AuditItemRow.demand_id)
        .join(QueueTextRow, same_demand(QueueTextRow, AuditItemRow))
        .where(*conditions)
    )
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar()
    statement = (
        select(
            AuditItemRow.source,
            AuditItemRow.demand_id,
            Demand.channel,
            Demand.occurred_at,
            QueueTextRow.text,
        )
        .join(Demand, same_demand(Demand, AuditItemRow))
        .join(QueueTextRow, same_demand(QueueTextRow, AuditItemRow))
        .where(*conditions)
        .order_by(AuditItemRow.draw, AuditItemRow.source, AuditItemRow.demand_id)
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return int(total or 0), [AuditQueueRow(s, d, c, as_utc(at), t) for s, d, c, at, t in rows]


def _review_candidate(below: float) -> Any:
    return or_(Demand.needs_review.is_(True), Demand.confidence < below)


@dataclass(frozen=True)
class ReviewQueueRow:
    source: str
    demand_id: str
    channel: str
    occurred_at: datetime
    text: str
    purpose: str
    demand_type: str
    failure_kind: str | None
    confidence: float
    needs_review: bool
    model_version: str


async def review_queue(
    session: AsyncSession,
    *,
    below: float,
    purpose: str | None,
    limit: int,
    source: str | None = None,
) -> tuple[int, list[ReviewQueueRow]]:
    """Demands the machine was unsure of (needs_review, or confidence below ``below``) that
    no person has labelled, lowest confidence first. Audit items are not here: they are
    shown blind, in the audit queue, so that no one sees the machine's label of them.

    Read off the review queue the write path keeps (db/review_entries.py: the demands with
    their words kept, unlabelled, not audit items): the count and the head come from its
    indexes, a table the size of the queue, and only the head's demands are read."""
    conditions = [
        or_(QueueEntry.needs_review.is_(True), QueueEntry.confidence < below),
    ]
    if purpose is not None:
        conditions.append(QueueEntry.purpose == purpose)
    if source is not None:
        conditions.append(QueueEntry.source == source)
    total = (
        await session.execute(select(func.count()).select_from(QueueEntry).where(*conditions))
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
        .select_from(QueueEntry)
        .join(Demand, same_demand(Demand, QueueEntry))
        .join(QueueTextRow, same_demand(QueueTextRow, QueueEntry))
        .where(*conditions)
        # The entry's copies of the demand's columns: the index's order, read in order.
        .order_by(
            QueueEntry.confidence, QueueEntry.occurred_at, QueueEntry.source, QueueEntry.demand_id
        )
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return int(total or 0), [
        ReviewQueueRow(s, d, c, as_utc(at), t, p, kind, fk, float(conf), bool(nr), mv)
        for s, d, c, at, t, p, kind, fk, conf, nr, mv in rows
    ]


async def review_item(
    session: AsyncSession, source: str | None, demand_id: str
) -> dict[str, Any] | None:
    """One demand of the review queue by id (the pages label it), with the machine's
    suggestion; None when its words are no longer kept."""
    row = (
        await session.execute(
            select(
                Demand.source,
                Demand.demand_id,
                Demand.channel,
                Demand.occurred_at,
                QueueTextRow.text,
                Demand.demand_type,
                Demand.purpose,
                Demand.failure_kind,
                Demand.confidence,
            )
            .join(QueueTextRow, same_demand(QueueTextRow, Demand))
            .where(Demand.demand_id == demand_id, *_of_source(source))
            .order_by(Demand.source)
        )
    ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["occurred_at"] = as_utc(found["occurred_at"])
    found["confidence"] = float(found["confidence"])
    return found


async def audit_item(
    session: AsyncSession, source: str | None, demand_id: str
) -> dict[str, Any] | None:
    """One audit item by id, blind (what the customer said, how and when); None when it is
    not in the sample or its words are no longer kept."""
    row = (
        await session.execute(
            select(
                Demand.source,
                Demand.demand_id,
                Demand.channel,
                Demand.occurred_at,
                QueueTextRow.text,
            )
            .join(AuditItemRow, same_demand(AuditItemRow, Demand))
            .join(QueueTextRow, same_demand(QueueTextRow, Demand))
            .where(Demand.demand_id == demand_id, *_of_source(source))
            .order_by(Demand.source)
        )
    ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["occurred_at"] = as_utc(found["occurred_at"])
    return found


async def audit_machine_label(
    session: AsyncSession, source: str, demand_id: str
) -> tuple[str, str, str | None] | None:
    """The machine's first label of an audit item (purpose, type, failure kind): shown only
    once a person has answered it."""
    row = (
        await session.execute(
            select(
                AuditItemRow.purpose,
                AuditItemRow.machine_demand_type,
                AuditItemRow.machine_failure_kind,
            ).where(AuditItemRow.source == source, AuditItemRow.demand_id == demand_id)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def counted_purpose(session: AsyncSession, source: str, demand_id: str) -> str | None:
    """The purpose a demand counts under now: its fact's (the latest label applied, else the
    machine's); the demand's own before its fact is derived. None: no such demand."""
    row = (
        await session.execute(
            select(func.coalesce(DemandFactRow.purpose, Demand.purpose))
            .select_from(Demand)
            .outerjoin(DemandFactRow, same_demand(DemandFactRow, Demand))
            .where(Demand.source == source, Demand.demand_id == demand_id)
        )
    ).first()
    return None if row is None else str(row[0])


async def purge_queue_texts(
    session: AsyncSession, *, received_before: datetime, review_below: float
) -> int:
    """Delete the texts past retention, and those no queue needs any more: not an open
    audit item, and labelled or never a review candidate. Returns how many went."""
    open_audit = exists().where(same_demand(AuditItemRow, QueueTextRow), not_(_audit_labelled()))
    labelled = exists().where(same_demand(LabelRow, QueueTextRow, source="demand_source"))
    candidate = exists().where(same_demand(Demand, QueueTextRow), _review_candidate(review_below))
    statement = delete(QueueTextRow).where(
        or_(
            QueueTextRow.received_at < received_before,
            and_(not_(open_audit), or_(labelled, not_(candidate))),
        )
    )
    result = await session.execute(statement)
    await review_entries.drop_without_text(session)
    return int(getattr(result, "rowcount", 0) or 0)
