"""A SQLite file's log checkpointed in the background: the engine's commits leave it to the
checkpointer (the backstop raised), and a round of the checkpointer lets the writer start
the log again from the top. Sizes of the log file, never times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.database.checkpoint import BACKSTOP_PAGES, WalCheckpointer, sqlite_file
from shared.database.engine import create_engine

PAGE = 4096
ROWS_PER_COMMIT = 100  # a row of 3,000 bytes: about a page each


async def _write(engine: AsyncEngine, commits: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER, b BLOB)"))
    for _ in range(commits):
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO t VALUES (:n, randomblob(3000))"),
                [{"n": n} for n in range(ROWS_PER_COMMIT)],
            )


@asynccontextmanager
async def _engine(url: str, wal_autocheckpoint: int | None) -> AsyncIterator[AsyncEngine]:
    # Open throughout: the last connection to close checkpoints the log and deletes it.
    engine = create_engine(url, wal_autocheckpoint=wal_autocheckpoint)
    try:
        yield engine
    finally:
        await engine.dispose()


def _log_pages(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size // PAGE


@pytest.mark.parametrize("raised", [True, False])
async def test_commits_leave_the_log_to_the_checkpointer_when_the_backstop_is_raised(
    tmp_path: Path, raised: bool
) -> None:
    path = tmp_path / "db.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    async with _engine(url, BACKSTOP_PAGES if raised else None) as engine:
        await _write(engine, 25)  # ~2,500 pages
        if raised:
            assert _log_pages(path) > 2_000  # no commit checkpointed at SQLite's 1,000
        else:
            assert _log_pages(path) < 1_500  # the commit past 1,000 pages did, and restarted


async def test_a_round_lets_the_writer_start_the_log_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    assert sqlite_file(url) == path
    checkpointer = WalCheckpointer(path)
    async with _engine(url, BACKSTOP_PAGES) as engine:
        await _write(engine, 10)
        grown = _log_pages(path)
        assert grown > 900

        assert await checkpointer.checkpoint_once()
        assert not await checkpointer.checkpoint_once()  # nothing written since
        await _write(engine, 5)
        # Every frame was in the database: the writer started the log from the top again.
        assert _log_pages(path) == grown
        assert await checkpointer.checkpoint_once()


async def test_without_a_round_the_log_only_grows(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    async with _engine(url, BACKSTOP_PAGES) as engine:
        await _write(engine, 10)
        grown = _log_pages(path)
        await _write(engine, 5)
        assert _log_pages(path) > grown + 400


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite:///:memory:", "postgresql+asyncpg://u:p@127.0.0.1:5432/demandscope"],
)
def test_no_file_no_checkpointer(url: str) -> None:
    assert sqlite_file(url) is None
