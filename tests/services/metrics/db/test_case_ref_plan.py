"""A case is found by the source's own reference off an index (migration 0020): without it,
every ``GET /v1/cases/<ref>`` scanned the whole cases table, a read whose cost grew with the
table. The plans of the statements the timeline runs (db/cases.py's, on sqlite3 itself) are
read with EXPLAIN QUERY PLAN on SQLite, not timed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.metrics import service
from services.metrics.db import cases
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import Event
from tests.support.factories import demand_classified
from tests.support.query_plans import sqlite_plans

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


async def test_a_case_is_found_by_its_reference_off_an_index(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    events: list[Event] = [
        demand_classified(
            id=f"d-{n}",
            source="demo",
            customer_ref=f"C-{n}",
            case_ref=f"K-{n}" if n % 2 else None,
            occurred_at=T0 + timedelta(minutes=n),
        )
        for n in range(20)
    ]
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            assert not (await apply_events(session, events)).refused
        async with session_factory(engine)() as session:
            found = await service.case_timeline(session, "K-7")
            mine = await service.case_timeline(session, "K-7", source="demo")
            theirs = await service.case_timeline(session, "K-7", source="other")
            # Not (yet) there: read by id, then by reference (a probe's polls until it is).
            nobody = await service.case_timeline(session, "K-404")
    finally:
        await engine.dispose()
    assert found is not None
    assert mine is not None
    assert theirs is None
    assert nobody is None
    assert [e.id for e in found.entries if e.kind == "demand"] == ["d-7"]

    by_ref = sqlite_plans(
        path,
        [
            (cases.BY_REF, {"case": "K-7"}),
            (cases.BY_REF_OF_SOURCE, {"case": "K-7", "source": "demo"}),
        ],
    )
    for plan in by_ref:
        assert any("USING INDEX ix_cases_case_ref" in step for step in plan), plan
    # Nothing the timeline runs scans a table: the case by id, its demands and its events
    # are searches of a key or an index too.
    every = sqlite_plans(
        path,
        [
            (cases.BY_ID, {"case": "auto-d-7"}),
            (cases.BY_ID_OF_SOURCE, {"case": "auto-d-7", "source": "demo"}),
            (cases.BY_REF, {"case": "K-7"}),
            (cases.BY_REF_OF_SOURCE, {"case": "K-7", "source": "demo"}),
            (cases.DEMANDS, {"source": "demo", "customer": "C-7", "case": "auto-d-7"}),
            (cases.EVENTS, {"source": "demo", "customer": "C-7", "ref": "K-7"}),
        ],
    )
    for plan in every:
        assert not any(step.startswith("SCAN") for step in plan), plan
