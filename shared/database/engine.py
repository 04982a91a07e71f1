"""Async engines, built by a composition root, never at import."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

# A SQLite file's pool keeps as many connections as the default pool allows at once (5 kept +
# 10 overflow), all of them: an idle one costs a parked thread and nothing else, while an
# overflow connection is opened and closed around each use (its thread, the pragmas, the
# schema parsed again: ~0.5 ms of CPU). The metrics API's polled reads beside the consumer
# churned 261-377 of them a bench stack run (docs/performance.md, issue 14).
SQLITE_POOL_SIZE = 15


def create_engine(url: str, *, wal_autocheckpoint: int | None = None) -> AsyncEngine:
    """``wal_autocheckpoint``: on a SQLite file, the WAL's size in pages at which a commit
    checkpoints it (SQLite's default: 1,000). A service that checkpoints in the background
    (checkpoint.WalCheckpointer) raises it, so that its commits do not copy the WAL into the
    database and fsync both on the way; the default stays as the backstop."""
    parsed = make_url(url)
    options: dict[str, Any] = {
        # A server's connection can die with a restart or a proxy's idle timeout: checked
        # on checkout. A SQLite file's cannot, and the check would cost each session a round
        # trip to aiosqlite's thread (4 of the classifier's 7 hand-offs per batch).
        "pool_pre_ping": parsed.get_backend_name() != "sqlite",
    }
    # An in-memory database has one connection (SQLAlchemy's StaticPool): nothing to size.
    dialect = parsed.get_dialect()
    if (
        parsed.get_backend_name() == "sqlite"
        and issubclass(dialect, DefaultDialect)
        and issubclass(dialect.get_pool_class(parsed), QueuePool)
    ):
        options |= {"pool_size": SQLITE_POOL_SIZE, "max_overflow": 0}
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        # WAL lets readers (the API, other processes) work while one writer commits;
        # synchronous=NORMAL makes a commit an append to the log rather than an fsync of the
        # database; the busy timeout rides out the moments two writers overlap.
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            if wal_autocheckpoint is not None:
                cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
            cursor.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
