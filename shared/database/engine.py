"""Async engines, built by a composition root, never at import."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(url: str) -> AsyncEngine:
    # A server's connection can die with a restart or a proxy's idle timeout: checked on
    # checkout. A SQLite file's cannot, and the check would cost each session a round trip
    # to aiosqlite's thread (4 of the classifier's 7 hand-offs per batch).
    pre_ping = make_url(url).get_backend_name() != "sqlite"
    engine = create_async_engine(url, pool_pre_ping=pre_ping)
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
            cursor.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
