"""A purpose's open-case ages and its end-to-end percentiles and distribution are read off
the cases' indexes alone, whatever the filters (source, first channel, team): with a filter
whose column the index lacked, each row of the OFFSET walk was looked up in the table (50 ms
for one purpose's ages at a million demands, 1-2 ms off the index). The plans of the
statements the figures run are read with EXPLAIN QUERY PLAN on SQLite, not timed."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.metrics.db import measures, sql
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.domain.windows import Period
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, Channel, Event
from tests.support.factories import case_event, demand_classified
from tests.support.query_plans import reads_recorded, sqlite_plans

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FILTERS = [{}, {"source": "demo"}, {"channel": "phone"}, {"team": "north"}]


@pytest.mark.parametrize("extra", FILTERS, ids=lambda e: ",".join(e) or "none")
async def test_the_seeks_read_the_cases_off_an_index_alone(
    tmp_path: Path, extra: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    events: list[Event] = []
    for n in range(12):
        opened = T0 + timedelta(hours=n)
        events.append(
            demand_classified(id=f"p-{n}", source="demo", customer_ref=f"P-{n}", case_ref=f"KP-{n}",
                              occurred_at=opened, purpose="repair", team="north",
                              channel=Channel.PHONE)
        )  # fmt: skip
        if n % 2:  # the others stay open
            events.append(
                case_event(id=f"pe-{n}", source="demo", customer_ref=f"P-{n}", case_ref=f"KP-{n}",
                           type=CaseEventType.FULFILLED, purpose="repair",
                           occurred_at=opened + timedelta(seconds=300 * n))
            )  # fmt: skip
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            assert not (await apply_events(session, events)).refused
        start = datetime.combine(date(2026, 3, 1), time.min, UTC)
        filters = Filters(period=Period(start, start + timedelta(days=30)), **extra)
        # The percentiles' seeks are plain SQL on the connection (sql.run_sync), not
        # SQLAlchemy's statements: recorded where they are run.
        plain = _plain_reads_recorded(monkeypatch, touching="cases")
        with reads_recorded(engine, touching="cases") as statements:
            async with session_factory(engine)() as session:
                count, ages, _oldest = await measures.open_case_ages(
                    session, filters, purpose="repair", now=T0 + timedelta(days=1),
                    quantiles=[50.0, 85.0, 95.0],
                )  # fmt: skip
                times = await measures.end_to_end_percentiles(
                    session, filters, [50.0, 85.0, 95.0], purpose="repair"
                )
                await measures.end_to_end_histogram(session, filters, purpose="repair")
    finally:
        await engine.dispose()
    # The seeks ran and found their rows.
    assert count == 6
    assert ages
    assert times["repair"]

    assert plain, "the percentiles' seeks ran as plain SQL"
    plans = sqlite_plans(path, statements + plain)
    assert len(plans) >= 4, statements
    for plan in plans:
        on_cases = [step for step in plan if " cases " in f"{step} "]
        assert on_cases, plan
        assert all("USING COVERING INDEX" in step for step in on_cases), plan


def _plain_reads_recorded(
    monkeypatch: pytest.MonkeyPatch, *, touching: str
) -> list[tuple[str, Any]]:
    """The SELECTs run as plain SQL on SQLite (sql.SqliteDb) that read ``touching``."""
    recorded: list[tuple[str, Any]] = []
    rows = sql.SqliteDb.rows
    table = re.compile(rf"\b(?:FROM|JOIN)\s+{re.escape(touching)}\b")

    def recording(self: sql.SqliteDb, statement: str, params: Any = None) -> list[Any]:
        if table.search(statement):
            recorded.append((statement, dict(params or {})))
        return rows(self, statement, params)

    monkeypatch.setattr(sql.SqliteDb, "rows", recording)
    return recorded
