"""Every query on the idempotency ledger, and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from services.intake.db.tables import PENDING, PUBLISHED, AcceptedEvent

# (kind, source, event id)
EventKey = tuple[str, str, str]

_CHUNK = 500  # keys per IN list: well under SQLite's bound-parameter limit


async def insert_claims(
    connection: AsyncConnection, keys: Sequence[EventKey], at: datetime
) -> set[EventKey]:
    """Inserts a pending row per new key; returns the keys this call inserted."""
    dialect = connection.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # One cached statement run with many parameter sets ("insertmanyvalues"): a VALUES
    # list of varying length would be compiled afresh for every burst.
    statement = (
        insert(AcceptedEvent)
        .values(state=PENDING, claimed_at=at)
        .on_conflict_do_nothing()
        .returning(AcceptedEvent.kind, AcceptedEvent.source, AcceptedEvent.event_id)
    )
    rows = [
        {"kind": kind, "source": source, "event_id": event_id} for kind, source, event_id in keys
    ]
    result = await connection.execute(statement, rows)
    inserted = {(kind, source, event_id) for kind, source, event_id in result.all()}
    return inserted


async def states(connection: AsyncConnection, keys: Sequence[EventKey]) -> dict[EventKey, str]:
    found: dict[EventKey, str] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        rows = await connection.execute(
            select(
                AcceptedEvent.kind,
                AcceptedEvent.source,
                AcceptedEvent.event_id,
                AcceptedEvent.state,
            ).where(_key_in(chunk))
        )
        found.update({(kind, src, event_id): state for kind, src, event_id, state in rows.all()})
    return found


async def take_over_stale(
    connection: AsyncConnection, key: EventKey, *, stale_before: datetime, at: datetime
) -> bool:
    """Re-claims a pending row whose claimer has not finished in time (it crashed)."""
    result = await connection.execute(
        update(AcceptedEvent)
        .where(
            AcceptedEvent.kind == key[0],
            AcceptedEvent.source == key[1],
            AcceptedEvent.event_id == key[2],
            AcceptedEvent.state == PENDING,
            AcceptedEvent.claimed_at < stale_before,
        )
        .values(claimed_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


async def mark_published(
    connection: AsyncConnection, keys: Sequence[EventKey], at: datetime
) -> None:
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        await connection.execute(
            update(AcceptedEvent).where(_key_in(chunk)).values(state=PUBLISHED, published_at=at)
        )


async def delete_pending(connection: AsyncConnection, keys: Sequence[EventKey]) -> None:
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        await connection.execute(
            delete(AcceptedEvent).where(
                _key_in(chunk),
                AcceptedEvent.state == PENDING,
            )
        )


def _key_in(keys: Sequence[EventKey]) -> ColumnElement[bool]:
    return tuple_(AcceptedEvent.kind, AcceptedEvent.source, AcceptedEvent.event_id).in_(keys)


async def delete_expired(connection: AsyncConnection, *, published_before: datetime) -> int:
    """Forgets ids older than the retention window (a pending row that old is abandoned)."""
    result = await connection.execute(
        delete(AcceptedEvent).where(
            or_(
                and_(
                    AcceptedEvent.state == PUBLISHED, AcceptedEvent.published_at < published_before
                ),
                and_(AcceptedEvent.state == PENDING, AcceptedEvent.claimed_at < published_before),
            )
        )
    )
    return int(getattr(result, "rowcount", 0))
