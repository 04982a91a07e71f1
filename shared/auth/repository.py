"""Every query on the api_keys and accounts tables, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.accounts import AccountRecord, Role
from shared.auth.keys import ApiKeyRecord, Scope
from shared.auth.tables import AccountRow, ApiKeyRow


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


# --- accounts ---------------------------------------------------------------------------------


async def insert_account(session: AsyncSession, record: AccountRecord) -> None:
    session.add(
        AccountRow(
            username=record.username,
            role=record.role.value,
            password_hash=record.password_hash,
            created_at=record.created_at,
            disabled_at=record.disabled_at,
        )
    )


async def find_account(session: AsyncSession, username: str) -> AccountRecord | None:
    row = await session.get(AccountRow, username)
    return None if row is None else _account(row)


async def all_accounts(session: AsyncSession) -> list[AccountRecord]:
    rows = await session.scalars(select(AccountRow).order_by(AccountRow.username))
    return [_account(row) for row in rows.all()]


async def mark_disabled(session: AsyncSession, username: str, at: datetime) -> bool:
    """True when an enabled account was disabled now; disabling twice keeps the first time."""
    result = await session.execute(
        update(AccountRow)
        .where(AccountRow.username == username, AccountRow.disabled_at.is_(None))
        .values(disabled_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


def _account(row: AccountRow) -> AccountRecord:
    return AccountRecord(
        username=row.username,
        role=Role(row.role),
        password_hash=row.password_hash,
        created_at=_utc(row.created_at),
        disabled_at=None if row.disabled_at is None else _utc(row.disabled_at),
    )
