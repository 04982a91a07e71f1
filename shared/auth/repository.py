"""Every query on the api_keys table, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.keys import ApiKeyRecord, Scope
from shared.auth.tables import ApiKeyRow


async def insert_key(session: AsyncSession, record: ApiKeyRecord) -> None:
    session.add(
        ApiKeyRow(
            key_id=record.key_id,
            source=record.source,
            scopes=" ".join(sorted(record.scopes)),
            hash=record.hash,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
        )
    )


async def find_key(session: AsyncSession, key_id: str) -> ApiKeyRecord | None:
    row = await session.get(ApiKeyRow, key_id)
    return None if row is None else _record(row)


async def all_keys(session: AsyncSession, *, source: str | None = None) -> list[ApiKeyRecord]:
    query = select(ApiKeyRow).order_by(ApiKeyRow.source, ApiKeyRow.created_at)
    if source is not None:
        query = query.where(ApiKeyRow.source == source)
    return [_record(row) for row in (await session.scalars(query)).all()]


async def mark_revoked(session: AsyncSession, key_id: str, at: datetime) -> bool:
    """True when a live key was revoked now; revoking twice keeps the first time."""
    result = await session.execute(
        update(ApiKeyRow)
        .where(ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


def _record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        source=row.source,
        scopes=frozenset(Scope(name) for name in row.scopes.split()),
        hash=row.hash,
        created_at=_utc(row.created_at),
        revoked_at=None if row.revoked_at is None else _utc(row.revoked_at),
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
