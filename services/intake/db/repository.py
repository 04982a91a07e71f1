"""Every query on the idempotency ledger, and nothing else.

A burst of the ledger writer (``services/intake/ledger.py``) is one transaction: release,
confirm, then claim.

A row is published when its state says so (``mark_published``, a confirmation by key) or
when the token it was claimed with is in ``intake_confirmed_claims`` (``confirm_tokens``, a
request's confirmation: one appended row, where an UPDATE of each of its keys cost about a
tenth of a batched event, docs/performance.md). Every query that asks whether a row is
published asks both. A take-over keeps the row's token (it moves ``claimed_at`` only) and
is reported in ``BurstResult.taken_over``: the taker confirms those keys by key, and a
late confirmation of the first claimer's token still publishes the row, whichever lands
first. On PostgreSQL (read committed) a take-over does not wait for a token confirmation
being written at the same moment (another table's insert): the row is taken over and
published a second time, a copy consumers drop by id, and the confirmation publishes it
when it commits; the taker's release then keeps it (docs/services/intake.md, the crash
windows). It runs one of two ways with the same outcome:

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

from sqlalchemy import DateTime, and_, delete, exists, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from services.intake.db.tables import PENDING, PUBLISHED, AcceptedEvent, ConfirmedClaim

# (kind, source, event id)
EventKey = tuple[str, str, str]

_CHUNK = 500  # keys per IN list: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class Burst:
    """One transaction of the ledger writer: what to release, confirm and claim."""

    released: Sequence[EventKey]
    confirmed: Sequence[EventKey]
    wanted: Sequence[EventKey]  # claims, each key once
    # The token each of ``wanted`` is claimed with (its first asker's), in the same order.
    claim_tokens: Sequence[bytes]
    confirmed_tokens: Sequence[bytes]  # requests whose claims are all published now
    at: datetime
    stale_before: datetime  # a pending claim older than this is taken over


@dataclass
class BurstResult:
    taken: set[EventKey] = field(default_factory=set)  # claimed by this burst
    known: dict[EventKey, str] = field(default_factory=dict)  # the others' states
    # Those of ``taken`` that were another claim's, taken over after its lease: their rows
    # keep the first claimer's token, so the taker confirms them by key.
    taken_over: set[EventKey] = field(default_factory=set)


async def apply_burst(connection: AsyncConnection, burst: Burst) -> BurstResult:
    """The burst in one transaction on ``connection`` (any dialect; used for PostgreSQL)."""
    result = BurstResult()
    async with connection.begin():
        # Release and confirm first, so a claim in the same burst sees their effect.
        if burst.released:
            await delete_pending(connection, burst.released)
        if burst.confirmed:
            await mark_published(connection, burst.confirmed, burst.at)
        if burst.confirmed_tokens:
            await confirm_tokens(connection, burst.confirmed_tokens, burst.at)
        if not burst.wanted:
            return result
        tokens = dict(zip(burst.wanted, burst.claim_tokens, strict=True))
        inserted = await insert_claims(connection, tokens, burst.at)
        existing = [key for key in burst.wanted if key not in inserted]
        result.known = await states(connection, existing) if existing else {}
        result.taken = set(inserted)
        for key in existing:
            if result.known.get(key) != PUBLISHED and await take_over_stale(
                connection, key, stale_before=burst.stale_before, at=burst.at
            ):
                result.taken.add(key)
                result.taken_over.add(key)
    return result


# --- SQLite without aiosqlite: the writer's own thread ----------------------------------------

_TABLE = AcceptedEvent.__tablename__
_CONFIRMED_CLAIMS = ConfirmedClaim.__tablename__
_KEY = "kind = ? AND source = ? AND event_id = ?"
# A pending row whose claim's request was confirmed: published.
_TOKEN_CONFIRMED = f"EXISTS (SELECT 1 FROM {_CONFIRMED_CLAIMS} WHERE token = claim_token)"
_UNPUBLISHED = f"state = '{PENDING}' AND NOT {_TOKEN_CONFIRMED}"
_RELEASE = f"DELETE FROM {_TABLE} WHERE {_KEY} AND {_UNPUBLISHED}"
_CONFIRM = f"UPDATE {_TABLE} SET state = '{PUBLISHED}', published_at = ? WHERE {_KEY}"
_CONFIRM_TOKEN = (
    f"INSERT INTO {_CONFIRMED_CLAIMS} (token, published_at) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
_CLAIM = (
    f"INSERT INTO {_TABLE} (kind, source, event_id, state, claimed_at, claim_token) "
    f"VALUES (?, ?, ?, '{PENDING}', ?, ?) ON CONFLICT DO NOTHING"
)
_STATE = (
    f"SELECT CASE WHEN {_TOKEN_CONFIRMED} THEN '{PUBLISHED}' ELSE state END "
    f"FROM {_TABLE} WHERE {_KEY}"
)
# The row keeps its token: a late confirmation of the first claimer still publishes it.
_TAKE_OVER = (
    f"UPDATE {_TABLE} SET claimed_at = ? WHERE {_KEY} AND {_UNPUBLISHED} AND claimed_at < ?"
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
        if burst.confirmed_tokens:
            connection.executemany(_CONFIRM_TOKEN, [(t, at) for t in burst.confirmed_tokens])
        # One cursor for every statement of the claims: connection.execute makes a new
        # one a call (0.2-0.3 µs a key on the writer's thread, measured).
        execute = connection.cursor().execute
        for key, token in zip(burst.wanted, burst.claim_tokens, strict=True):
            if execute(_CLAIM, (*key, at, token)).rowcount == 1:
                result.taken.add(key)
                continue
            row = execute(_STATE, key).fetchone()
            state = row[0] if row is not None else PENDING
            result.known[key] = state
            if state != PUBLISHED and execute(_TAKE_OVER, (at, *key, stale_before)).rowcount:
                result.taken.add(key)
                result.taken_over.add(key)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result


async def insert_claims(
    connection: AsyncConnection, keys: dict[EventKey, bytes], at: datetime
) -> set[EventKey]:
    """Inserts a pending row per new key, with its claim's token; returns the keys this
    call inserted."""
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
        {"kind": kind, "source": source, "event_id": event_id, "claim_token": token}
        for (kind, source, event_id), token in keys.items()
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
                _token_confirmed(),
            ).where(_key_in(chunk))
        )
        found.update(
            {
                (kind, src, event_id): PUBLISHED if confirmed else state
                for kind, src, event_id, state, confirmed in rows.all()
            }
        )
    return found


async def take_over_stale(
    connection: AsyncConnection,
    key: EventKey,
    *,
    stale_before: datetime,
    at: datetime,
) -> bool:
    """Re-claims a pending row whose claimer has not finished in time (it crashed). The row
    keeps the claimer's token: its late confirmation (the broker acknowledged) still
    publishes it; the taker confirms the key by key (``mark_published``)."""
    result = await connection.execute(
        update(AcceptedEvent)
        .where(
            AcceptedEvent.kind == key[0],
            AcceptedEvent.source == key[1],
            AcceptedEvent.event_id == key[2],
            _unpublished(),
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


async def confirm_tokens(
    connection: AsyncConnection, tokens: Sequence[bytes], at: datetime
) -> None:
    """Publishes every row claimed with one of ``tokens``: a row per request."""
    dialect = connection.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await connection.execute(
        insert(ConfirmedClaim).values(published_at=at).on_conflict_do_nothing(),
        [{"token": token} for token in tokens],
    )


async def delete_pending(connection: AsyncConnection, keys: Sequence[EventKey]) -> None:
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        await connection.execute(delete(AcceptedEvent).where(_key_in(chunk), _unpublished()))


def _token_confirmed() -> ColumnElement[bool]:
    """Whether a row's claim token was confirmed: the row is published."""
    return exists().where(ConfirmedClaim.token == AcceptedEvent.claim_token)


def _unpublished() -> ColumnElement[bool]:
    return and_(AcceptedEvent.state == PENDING, ~_token_confirmed())


def _key_in(keys: Sequence[EventKey]) -> ColumnElement[bool]:
    return tuple_(AcceptedEvent.kind, AcceptedEvent.source, AcceptedEvent.event_id).in_(keys)


async def delete_expired(connection: AsyncConnection, *, published_before: datetime) -> int:
    """Forgets ids older than the retention window (a pending row that old is abandoned),
    then the confirmations as old, whose rows went with them."""
    confirmed_before = select(ConfirmedClaim.token).where(
        ConfirmedClaim.published_at < published_before
    )
    result = await connection.execute(
        delete(AcceptedEvent).where(
            or_(
                and_(
                    AcceptedEvent.state == PUBLISHED, AcceptedEvent.published_at < published_before
                ),
                and_(
                    AcceptedEvent.state == PENDING,
                    AcceptedEvent.claim_token.in_(confirmed_before),
                ),
                and_(
                    _unpublished(),
                    AcceptedEvent.claimed_at < published_before,
                ),
            )
        )
    )
    await connection.execute(
        delete(ConfirmedClaim).where(ConfirmedClaim.published_at < published_before)
    )
    return int(getattr(result, "rowcount", 0))
