"""Query plans in tests: what an engine ran, and how SQLite plans it (read, never timed)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

Statement = tuple[str, Any]


@contextmanager
def reads_recorded(
    engine: AsyncEngine, *, touching: str | None = None
) -> Iterator[list[Statement]]:
    """The SELECTs (and WITH ... SELECTs) the engine runs meanwhile, with their parameters;
    with ``touching``, only those that read that table (FROM or JOIN it)."""
    recorded: list[Statement] = []
    table = re.compile(rf"\b(?:FROM|JOIN)\s+{re.escape(touching)}\b") if touching else None

    def keep(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        head = statement.lstrip().upper()
        if not (head.startswith("SELECT") or head.startswith("WITH")):
            return
        if table is None or table.search(statement):
            recorded.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    try:
        yield recorded
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", keep)


def sqlite_plans(
    path: Path, statements: Iterable[Statement], *, setup: Iterable[str] = ()
) -> list[list[str]]:
    """Each statement's EXPLAIN QUERY PLAN steps on the SQLite file at ``path``, after the
    ``setup`` statements (a temporary table the statements read, say)."""
    db = sqlite3.connect(path)
    try:
        for statement in setup:
            db.execute(statement)
        return [
            [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + statement, params)]
            for statement, params in statements
        ]
    finally:
        db.close()
