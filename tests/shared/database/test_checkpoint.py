"""A SQLite file's log checkpointed in the background: the engine's commits leave it to the
checkpointer (the backstop raised), and a round of the checkpointer lets the writer start
the log again from the top. Sizes of the log file, never times. A failing round is counted
and the task carries on; a round never creates the database; a URI-style URL gets no
checkpointer."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.database.checkpoint import (
    BACKSTOP_PAGES,
    FORCED_ROUND_S,
    WalCheckpointer,
    background_checkpoint,
    sqlite_file,
)
from shared.database.engine import create_engine
from tests.support.waiting import wait_until

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
    [
        "sqlite+aiosqlite:///:memory:",
        "postgresql+asyncpg://u:p@127.0.0.1:5432/demandscope",
        # URI-style: the path is not the file's, so neither the checkpointer nor the
        # raised backstop (main.py raises it only where a checkpointer runs).
        "sqlite+aiosqlite:///file:metrics.db?uri=true",
        "sqlite+aiosqlite:///file:/var/lib/metrics.db?mode=rwc&uri=true",
    ],
)
def test_no_file_no_checkpointer(url: str) -> None:
    assert sqlite_file(url) is None
    checkpoint = background_checkpoint(url)
    assert (checkpoint.wal_autocheckpoint, checkpoint.tasks) == (None, [])


def test_a_file_gets_the_raised_backstop_and_one_task(tmp_path: Path) -> None:
    checkpoint = background_checkpoint(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    assert checkpoint.wal_autocheckpoint == BACKSTOP_PAGES
    assert [task.name for task in checkpoint.tasks] == ["wal-checkpoint"]
    assert not (tmp_path / "db.sqlite").exists()  # nothing is opened until the task runs


async def test_a_round_is_forced_when_the_last_is_old_though_the_log_looks_unchanged(
    tmp_path: Path,
) -> None:
    # A coarse-mtime filesystem can hide a write: after FORCED_ROUND_S a round runs anyway.
    path = tmp_path / "db.sqlite"
    now = [0.0]
    checkpointer = WalCheckpointer(path, clock=lambda: now[0])
    async with _engine(f"sqlite+aiosqlite:///{path}", BACKSTOP_PAGES) as engine:
        await _write(engine, 1)
        assert await checkpointer.checkpoint_once()
        assert not await checkpointer.checkpoint_once()
        now[0] += FORCED_ROUND_S
        assert await checkpointer.checkpoint_once()
        assert not await checkpointer.checkpoint_once()


def _files(path: Path, *, database: bytes | None) -> None:
    """An empty log at ``path``, and the database's bytes (None: no database)."""
    Path(f"{path}-wal").write_bytes(b"")
    if database is not None:
        path.write_bytes(database)


async def test_a_round_never_creates_the_database(tmp_path: Path) -> None:
    path = tmp_path / "gone.sqlite"  # moved away, its log left behind
    _files(path, database=None)
    with pytest.raises(sqlite3.OperationalError):
        await WalCheckpointer(path).checkpoint_once()
    assert not path.exists()


async def test_failing_rounds_are_counted_logged_once_a_while_and_the_task_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite"
    _files(path, database=b"not a database " * 500)
    counted: list[None] = []
    checkpointer = WalCheckpointer(
        path, interval_s=0.01, on_failure=lambda: counted.append(None), clock=lambda: 0.0
    )
    caplog.set_level(logging.WARNING, logger="shared.database.checkpoint")
    task = asyncio.create_task(checkpointer.run())
    try:

        async def probe() -> int:
            return checkpointer.failures

        await wait_until(
            probe,
            accept=lambda failures: failures >= 3 or task.done(),
            what="three failed rounds, or the task to stop",
        )
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(counted) == checkpointer.failures >= 3
    warnings = [r for r in caplog.records if r.name == "shared.database.checkpoint"]
    assert len(warnings) == 1  # the clock stood still: no second warning within the minute
    assert "file is not a database" in warnings[0].getMessage()
