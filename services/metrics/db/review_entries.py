"""The review queue kept by the write path (tables.ReviewQueueRow).

An entry is a demand whose words are kept (queue_texts), that no person has labelled (a
label of any reason) and that is not an audit item: the review queue's demands, before the
candidate test (needs_review, or confidence below the setting), which the reader applies.
What moves an entry, and where:

- a demand arrives, joins or leaves the audit sample, or has its words kept: ``refresh``
  of those demands, from services/metrics/audit.draw_audit;
- a label arrives: ``take_labelled``, from services/metrics/ingest._apply;
- its words are purged: ``drop_without_text``, from db/queues.purge_queue_texts.

``refresh`` recomputes the entries of the demands it is given from the stored rows, so it is
right whatever it is given (a redelivered demand, an item that left the audit twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, exists, insert, not_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.sql import DemandKey, chunks, same_demand
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


async def refresh(session: AsyncSession, demands: Iterable[DemandKey]) -> None:
    """Make these demands' entries what the stored rows say: removed, then added back for
    those that belong."""
    for chunk in chunks(sorted(set(demands))):
        await session.execute(
            delete(ReviewQueueRow).where(
                tuple_(ReviewQueueRow.source, ReviewQueueRow.demand_id).in_(chunk)
            )
        )
        await session.execute(
            insert(ReviewQueueRow).from_select(
                list(_COLUMNS),
                members().where(tuple_(Demand.source, Demand.demand_id).in_(chunk)),
            )
        )


async def take_labelled(session: AsyncSession, labels: Sequence[DemandLabelled]) -> None:
    """A labelled demand waits no more: its entry goes (the label's demand by its source and
    id, as the queue's old query matched labels; a label without a source names the demand
    of the empty source)."""
    keys = sorted({(label.demand_source or "", label.demand_id) for label in labels})
    for chunk in chunks(keys):
        await session.execute(
            delete(ReviewQueueRow).where(
                tuple_(ReviewQueueRow.source, ReviewQueueRow.demand_id).in_(chunk)
            )
        )


async def drop_without_text(session: AsyncSession) -> None:
    """The entries whose words were purged: the queue cannot show them."""
    await session.execute(
        delete(ReviewQueueRow).where(
            not_(exists().where(same_demand(QueueTextRow, ReviewQueueRow)))
        )
    )
