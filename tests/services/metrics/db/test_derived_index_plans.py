"""The cases have four secondary indexes and the demand facts two (migration 0021): each one
is written by every case a live batch opens (and moved by the cases it closes) or by every
demand it stores. The reads of the figures, the pages and the publisher each search one of
the kept indexes: a purpose's partial days by time, its open cases' ages, its percentiles,
its chart's series, a case by id. What reads every row of a period (an arbitrary period over
every purpose) scans an index that carries the time or the status, not the table. Plans read
with EXPLAIN QUERY PLAN on SQLite, not timed; the statements are the ones the code runs,
captured as it runs them.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import service
from services.metrics.db import sql
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.domain.windows import Period
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, Channel, Event
from tests.support.factories import case_event, demand_classified
from tests.support.query_plans import Statement, sqlite_plans

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DERIVED = re.compile(r"\b(?:FROM|JOIN)\s+(?:cases|demand_facts)\b")
ON_DERIVED = re.compile(r"^(SCAN|SEARCH) (cases|demand_facts)\b")

KEPT = {
    "cases": {
        "ix_cases_purpose_fulfilled",
        "ix_cases_purpose_open_started_filtered",
        "ix_cases_purpose_end_to_end_filtered",
        "ix_cases_case_id",
        "ix_cases_case_ref",
    },
    "demand_facts": {"ix_demand_facts_purpose_occurred", "ix_demand_facts_customer"},
}

# What each of the kept indexes (but the reference's, test_case_ref_plan) is searched by.
SEARCHES = [
    # A purpose's partial days (the publisher's trailing window), by their time.
    "ix_demand_facts_purpose_occurred (purpose=? AND occurred_at>? AND occurred_at<?)",
    "ix_cases_purpose_fulfilled (purpose=? AND fulfilled_at>? AND fulfilled_at<?)",
    # Its open cases' ages, its percentiles' seeks (test_seek_plans: off the index alone).
    "ix_cases_purpose_open_started_filtered (purpose=? AND status=? AND measured=?)",
    "ix_cases_purpose_end_to_end_filtered (purpose=?",
    # A case by its id, and its demands by its customer.
    "ix_cases_case_id (case_id=?)",
    "ix_demand_facts_customer (source=? AND customer_ref=?)",
]


def _events() -> list[Event]:
    events: list[Event] = []
    for n in range(12):
        opened = T0 + timedelta(hours=7 * n)
        events.append(
            demand_classified(id=f"d-{n}", source="demo", customer_ref=f"C-{n}",
                              case_ref=f"K-{n}", occurred_at=opened, purpose="repair",
                              team="north", channel=Channel.PHONE)
        )  # fmt: skip
        if n % 3:  # the others stay open
            events.append(
                case_event(id=f"e-{n}", source="demo", customer_ref=f"C-{n}", case_ref=f"K-{n}",
                           type=CaseEventType.FULFILLED, purpose="repair",
                           occurred_at=opened + timedelta(hours=2 + n))
            )  # fmt: skip
    return events


@contextmanager
def _derived_reads(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The SELECTs that read the cases or the demand facts meanwhile: SQLAlchemy's, and the
    plain SQL run on the connection (sql.SqliteDb: whole days, the percentiles' seeks)."""
    recorded: list[Statement] = []

    def keep(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and DERIVED.search(statement):
            recorded.append((statement, params))

    rows = sql.SqliteDb.rows

    def plain(self: sql.SqliteDb, statement: str, params: Any = None) -> list[Any]:
        if DERIVED.search(statement):
            recorded.append((statement, dict(params or {})))
        return rows(self, statement, params)

    monkeypatch.setattr(sql.SqliteDb, "rows", plain)
    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    try:
        yield recorded
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", keep)


async def _stored(path: Path) -> AsyncEngine:
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    async with session_factory(engine)() as session, session.begin():
        assert not (await apply_events(session, _events())).refused
    return engine


def test_the_derived_tables_keep_only_the_indexes_the_reads_use(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    db = sqlite3.connect(path)
    try:
        for table, kept in KEPT.items():
            indexes = {
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                    "AND name NOT LIKE 'sqlite_autoindex_%'",
                    (table,),
                )
            }
            assert indexes == kept, table
    finally:
        db.close()


async def test_a_purposes_reads_search_a_kept_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.db"
    engine = await _stored(path)
    now = T0 + 4 * DAY + timedelta(hours=5, minutes=30)
    whole = Filters(period=Period(T0.replace(hour=0) - DAY, T0.replace(hour=0) + 7 * DAY))
    try:
        with _derived_reads(engine, monkeypatch) as statements:
            async with session_factory(engine)() as session:
                # The publisher's trailing window: partial days at both ends.
                published = await service.purpose_metrics(
                    session, "repair", settings=service.ChartSettings(), window_days=3, now=now
                )
                detail = await service.purpose_detail(
                    session, "repair", whole, settings=service.ChartSettings(), now=now
                )
                every = await service.purpose_summaries(session, whole)
                timeline = await service.case_timeline(session, "K-4", source="demo")
    finally:
        await engine.dispose()
    # The reads found what was stored.
    assert published.volume > 0
    assert published.cases_fulfilled > 0
    assert detail is not None
    assert detail.open_case_age.count == 4
    assert every[0].volume == 12
    assert timeline is not None

    plans = sqlite_plans(path, statements)
    steps = [step for plan in plans for step in plan if ON_DERIVED.match(step)]
    assert steps, statements
    # Every read of the derived tables is a search of one of their kept indexes (or their
    # keys): no scan, and nothing dropped.
    scans = [step for step in steps if not step.startswith("SEARCH")]
    assert not scans, scans
    used = {m for step in steps for m in re.findall(r"INDEX (\w+)", step)}
    assert used <= KEPT["cases"] | KEPT["demand_facts"] | {
        "sqlite_autoindex_cases_1",
        "sqlite_autoindex_demand_facts_1",
    }, used
    # Each read searches its own index, by its leading columns.
    for search in SEARCHES:
        assert any(search in step for step in steps), (search, steps)


async def test_every_purposes_arbitrary_period_scans_an_index_with_the_time_or_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.db"
    engine = await _stored(path)
    period = Period(T0 + timedelta(hours=3), T0 + 3 * DAY + timedelta(hours=1))
    try:
        with _derived_reads(engine, monkeypatch) as statements:
            async with session_factory(engine)() as session:
                summaries = await service.purpose_summaries(session, Filters(period=period))
    finally:
        await engine.dispose()
    assert summaries
    assert summaries[0].volume > 0

    steps = [s for plan in sqlite_plans(path, statements) for s in plan if ON_DERIVED.match(s)]
    # Every row of the period is counted (no index by purpose helps over every purpose), off
    # an index that holds the time or the status, so that rows outside are skipped unread.
    on_facts = [s for s in steps if s.startswith(("SCAN demand_facts", "SEARCH demand_facts"))]
    assert on_facts, steps
    assert all("USING" in s for s in on_facts), on_facts
    assert any("ix_demand_facts_purpose_occurred" in s for s in on_facts), on_facts
    on_cases = [s for s in steps if s.startswith("SCAN cases")]
    assert all("USING" in s for s in on_cases), on_cases
