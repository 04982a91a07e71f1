"""The review queue kept by the write path (tables.ReviewQueueRow).

An entry is a demand whose words are kept (queue_texts), that no person has labelled (a
label of any reason) and that is not an audit item: the review queue's demands, before the
candidate test (needs_review, or confidence below the setting), which the reader applies.
What moves an entry, and where:

- a demand arrives, joins or leaves the audit sample, or has its words kept: ``refresh_in``
  of those demands, from services/metrics/audit.upkeep;
- a label arrives: ``take_labelled``, from services/metrics/ingest._apply;
- its words are purged: ``drop_without_text``, from db/queues.purge_queue_texts.

``refresh`` recomputes the entries of the demands it is given from the stored rows, so it is
right whatever it is given (a redelivered demand, an item that left the audit twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import delete, exists, insert, not_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.sql import DemandKey, SyncDb, chunks, same_demand
from services.metrics.db.tables import (
    AuditItemRow,
    Demand,
    LabelRow,
    QueueTextRow,
    ReviewQueueRow,
)
from shared.events import DemandLabelled


def members() -> Any:
    """SELECT of the entries as the stored rows say they are (the migration's backfill
    writes the same set out in SQL)."""
    return (
        select(
            Demand.source,
            Demand.demand_id,
            Demand.purpose,
            Demand.confidence,
            Demand.needs_review,
            Demand.occurred_at,
        )
        .join(QueueTextRow, same_demand(QueueTextRow, Demand))
        .where(
            not_(exists().where(same_demand(LabelRow, Demand, source="demand_source"))),
            not_(exists().where(same_demand(AuditItemRow, Demand))),
        )
    )


_COLUMNS = ("source", "demand_id", "purpose", "confidence", "needs_review", "occurred_at")


def by_source(demands: Iterable[DemandKey]) -> Iterator[tuple[str, Sequence[str]]]:
    """The demands as (source, some of its ids): ``source = ? AND demand_id IN (...)`` is a
    search of the key in SQLite, where ``(source, demand_id) IN (VALUES ...)`` scans it."""
    ids: dict[str, set[str]] = {}
    for source, demand_id in demands:
        ids.setdefault(source, set()).add(demand_id)
    for source in sorted(ids):
        for chunk in chunks(sorted(ids[source])):
            yield source, chunk


# members() for some demands of one source, in the write path's SQL (refresh_in, below).
_MEMBERS_OF = (
    "INSERT INTO review_queue (source, demand_id, purpose, confidence, needs_review, "
    "occurred_at) SELECT d.source, d.demand_id, d.purpose, d.confidence, d.needs_review, "
    "d.occurred_at FROM demands d JOIN queue_texts q "
    "ON q.source = d.source AND q.demand_id = d.demand_id "
    "WHERE d.source = :source AND d.demand_id IN {ids} "
    "AND NOT EXISTS (SELECT 1 FROM demand_labels l "
    "WHERE l.demand_source = d.source AND l.demand_id = d.demand_id) "
    "AND NOT EXISTS (SELECT 1 FROM audit_items a "
    "WHERE a.source = d.source AND a.demand_id = d.demand_id)"
)


def refresh_in(db: SyncDb, demands: Iterable[DemandKey]) -> None:
    """``refresh``, synchronously in the batch's transaction (sql.run_sync): the same
    statements, in SQL written once for both databases."""
    for source, ids in by_source(demands):
        params = {"source": source} | {f"i{n}": demand_id for n, demand_id in enumerate(ids)}
        marks = "(" + ", ".join(f":i{n}" for n in range(len(ids))) + ")"
        db.execute(
            f"DELETE FROM review_queue WHERE source = :source AND demand_id IN {marks}", params
        )
        db.execute(_MEMBERS_OF.format(ids=marks), params)


async def refresh(session: AsyncSession, demands: Iterable[DemandKey]) -> None:
    """Make these demands' entries what the stored rows say: removed, then added back for
    those that belong."""
    for source, ids in by_source(demands):
        await _remove(session, source, ids)
        await session.execute(
            insert(ReviewQueueRow).from_select(
                list(_COLUMNS),
                members().where(Demand.source == source, Demand.demand_id.in_(ids)),
            )
        )


async def _remove(session: AsyncSession, source: str, ids: Sequence[str]) -> None:
    await session.execute(
        delete(ReviewQueueRow).where(
            ReviewQueueRow.source == source, ReviewQueueRow.demand_id.in_(ids)
        )
    )


async def take_labelled(session: AsyncSession, labels: Sequence[DemandLabelled]) -> None:
    """A labelled demand waits no more: its entry goes (the label's demand by its source and
    id, as the queue's old query matched labels; a label without a source names the demand
    of the empty source)."""
    keys = {(label.demand_source or "", label.demand_id) for label in labels}
    for source, ids in by_source(keys):
        await _remove(session, source, ids)


async def drop_without_text(session: AsyncSession) -> None:
    """The entries whose words were purged: the queue cannot show them."""
    await session.execute(
        delete(ReviewQueueRow).where(
            not_(exists().where(same_demand(QueueTextRow, ReviewQueueRow)))
        )
    )
