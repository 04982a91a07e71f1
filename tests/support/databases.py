"""Throwaway databases on the session's PostgreSQL cluster, and beside a test's database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def create_databases(server_url: str, names: Sequence[str]) -> dict[str, str]:
    """Empty databases of these names on ``server_url``'s cluster: each name's URL."""
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for name in names:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    base = server_url.rsplit("/", 1)[0]
    return {name: f"{base}/{name}" for name in names}


async def database_beside(url: str, tmp_path: Path) -> str:
    """An empty database of the same kind as ``url``'s, beside it (a SQLite file in
    ``tmp_path``, or a new database on the same PostgreSQL cluster)."""
    if url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'beside.db'}"
    name = f"test_beside_{uuid.uuid4().hex[:12]}"
    return (await create_databases(url, [name]))[name]
