"""A SQLite file's pool keeps the connections it opens, so overlapping reads (the metrics API
polled beside the consumer) do not open and close a connection each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from shared.database.engine import SQLITE_POOL_SIZE, create_engine


async def test_a_sqlite_file_reuses_as_many_connections_as_were_open_at_once(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    opened = 0

    @event.listens_for(engine.sync_engine, "connect")
    def _count(_connection: Any, _record: Any) -> None:
        nonlocal opened
        opened += 1

    all_open = asyncio.Event()
    holding = 0

    async def hold() -> None:
        nonlocal holding
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            holding += 1
            if holding == SQLITE_POOL_SIZE:
                all_open.set()
            await asyncio.wait_for(all_open.wait(), 10)

    try:
        for _ in range(2):  # every one open at once, all given back, then again
            all_open.clear()
            holding = 0
            await asyncio.gather(*(hold() for _ in range(SQLITE_POOL_SIZE)))
        # The default pool (5 kept, 10 overflow) opened 15 the first time and 10 again.
        assert opened == SQLITE_POOL_SIZE
        assert engine.pool.checkedin() == SQLITE_POOL_SIZE  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_an_in_memory_database_keeps_its_single_connection() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
        async with engine.connect() as connection:  # the same database: the same connection
            await connection.execute(text("SELECT x FROM t"))
    finally:
        await engine.dispose()
