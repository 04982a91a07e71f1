"""Every query on the idempotency ledger, and nothing else.

A burst of the ledger writer (``services/intake/ledger.py``) is one transaction: release,
confirm, then claim. It runs one of two ways with the same outcome:

- ``apply_burst``: SQLAlchemy on an async connection (PostgreSQL: asyncpg has no thread
  between the loop and the socket, so a statement is one round trip);
- ``apply_burst_sqlite``: plain ``sqlite3`` statements in one synchronous function, which
  the writer runs on its own thread: one thread hop per burst. Through aiosqlite every
  statement, the BEGIN and the COMMIT was a hop of its own, and those hops, not SQLite,
  were most of the ledger's cost (docs/performance.md, "Where the time goes").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from services.intake.db.tables import PENDING, PUBLISHED, AcceptedEvent

# (kind, source, event id)
EventKey = tuple[str, str, str]

_CHUNK = 500  # keys per IN list: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class Burst:
    """One transaction of the ledger writer: what to release, confirm and claim."""

    released: Sequence[EventKey]
    confirmed: Sequence[EventKey]
    wanted: Sequence[EventKey]  # claims, each key once
    at: datetime
    stale_before: datetime  # a pending claim older than this is taken over


@dataclass
class BurstResult:
    taken: set[EventKey] = field(default_factory=set)  # claimed by this burst
    known: dict[EventKey, str] = field(default_factory=dict)  # the others' states


async def apply_burst(connection: AsyncConnection, burst: Burst) -> BurstResult:
    """The burst in one transaction on ``connection`` (any dialect; used for PostgreSQL)."""
    result = BurstResult()
    async with connection.begin():
        # Release and confirm first, so a claim in the same burst sees their effect.
        if burst.released:
            await delete_pending(connection, burst.released)
        if burst.confirmed:
            await mark_published(connection, burst.confirmed, burst.at)
        if not burst.wanted:
            return result
        inserted = await insert_claims(connection, burst.wanted, burst.at)
        existing = [key for key in burst.wanted if key not in inserted]
        result.known = await states(connection, existing) if existing else {}
        result.taken = set(inserted)
        for key in existing:
            if result.known.get(key) != PUBLISHED and await take_over_stale(
                connection, key, stale_before=burst.stale_before, at=burst.at
            ):
                result.taken.add(key)
    return result


# --- SQLite without aiosqlite: the writer's own thread ----------------------------------------

_TABLE = AcceptedEvent.__tablename__
_KEY = "kind = ? AND source = ? AND event_id = ?"
_RELEASE = f"DELETE FROM {_TABLE} WHERE {_KEY} AND state = '{PENDING}'"
_CONFIRM = f"UPDATE {_TABLE} SET state = '{PUBLISHED}', published_at = ? WHERE {_KEY}"
_CLAIM = (
    f"INSERT INTO {_TABLE} (kind, source, event_id, state, claimed_at) "
    f"VALUES (?, ?, ?, '{PENDING}', ?) ON CONFLICT DO NOTHING"
)
_STATE = f"SELECT state FROM {_TABLE} WHERE {_KEY}"
_TAKE_OVER = (
    f"UPDATE {_TABLE} SET claimed_at = ? WHERE {_KEY} AND state = '{PENDING}' AND claimed_at < ?"
)
# Dates stored exactly as SQLAlchemy's DateTime stores them on SQLite (text that sorts as
# time), so the purge and migrations, which go through SQLAlchemy, compare them alike.
_SQLITE = sqlite.dialect()
_STORED = DateTime(timezone=True).dialect_impl(_SQLITE).bind_processor(_SQLITE)


def stored_datetime(moment: datetime) -> str:
    assert _STORED is not None
    return str(_STORED(moment))


def connect_sqlite(path: str, *, wal_autocheckpoint: int | None = None) -> sqlite3.Connection:
    """The writer's connection: autocommit mode (transactions are explicit), the same
    pragmas as ``shared.database.engine``, usable only from the thread that opened it.
    ``wal_autocheckpoint`` as in ``create_engine``: raised when a WalCheckpointer runs, so
    that no commit copies the log into the database and fsyncs on the way."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=10000")
    if wal_autocheckpoint is not None:
        connection.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
    return connection


def apply_burst_sqlite(connection: sqlite3.Connection, burst: Burst) -> BurstResult:
    """The burst in one transaction, synchronously: call it on the connection's thread.

    BEGIN IMMEDIATE takes SQLite's write lock first, so no other process or connection
    writes between reading a key's state and claiming it: each key's claim is decided once.
    """
    at, stale_before = stored_datetime(burst.at), stored_datetime(burst.stale_before)
    result = BurstResult()
    connection.execute("BEGIN IMMEDIATE")
    try:
        if burst.released:
            connection.executemany(_RELEASE, burst.released)
        if burst.confirmed:
            connection.executemany(_CONFIRM, [(at, *key) for key in burst.confirmed])
        # One cursor for every statement of the claims: connection.execute makes a new
        # one a call (0.2-0.3 µs a key on the writer's thread, measured).
        execute = connection.cursor().execute
        for key in burst.wanted:
            if execute(_CLAIM, (*key, at)).rowcount == 1:
                result.taken.add(key)
                continue
            row = execute(_STATE, key).fetchone()
            state = row[0] if row is not None else PENDING
            result.known[key] = state
            if state != PUBLISHED and execute(_TAKE_OVER, (at, *key, stale_before)).rowcount:
                result.taken.add(key)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result


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
