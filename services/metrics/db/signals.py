"""The queries of the special-cause signals and their outbox (services/metrics/signals.py).

One module of db/, as each kind of query has, so that signals could be persisted without
touching the queries the rest of the service relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.tables import SpecialCauseSignalRow

_CHUNK = 500


async def insert_new_signals(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """INSERT ... ON CONFLICT DO NOTHING; the ids of the rows this insert added.

    On PostgreSQL a concurrent insert of the same signal by another replica waits for that
    transaction and then does nothing, so exactly one writer ever gets the id back."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    added: set[str] = set()
    for start in range(0, len(rows), _CHUNK):
        statement = (
            insert(SpecialCauseSignalRow)
            .values(list(rows[start : start + _CHUNK]))
            .on_conflict_do_nothing()
            .returning(SpecialCauseSignalRow.signal_id)
        )
        added.update((await session.execute(statement)).scalars())
    return added


async def unpublished(session: AsyncSession, *, limit: int) -> list[SpecialCauseSignalRow]:
    """The oldest signals not yet on capability.signals. On PostgreSQL they stay locked until
    the transaction ends and other replicas skip them, so two replicas rarely send one twice."""
    statement = (
        select(SpecialCauseSignalRow)
        .where(SpecialCauseSignalRow.published_at.is_(None))
        .order_by(SpecialCauseSignalRow.raised_at, SpecialCauseSignalRow.signal_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(statement)).scalars())


async def mark_published(session: AsyncSession, signal_ids: Sequence[str], at: datetime) -> None:
    if signal_ids:
        await session.execute(
            update(SpecialCauseSignalRow)
            .where(SpecialCauseSignalRow.signal_id.in_(list(signal_ids)))
            .values(published_at=at)
        )


async def raised(session: AsyncSession) -> list[SpecialCauseSignalRow]:
    """Every signal raised, oldest first (for tests and the curious operator)."""
    statement = select(SpecialCauseSignalRow).order_by(
        SpecialCauseSignalRow.raised_at, SpecialCauseSignalRow.signal_id
    )
    return list((await session.execute(statement)).scalars())
