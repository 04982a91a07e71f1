"""The rebuild's derivation over worker processes (services/metrics/rebuild_pool.py) writes
what the derivation in the rebuild's own process writes, row for row in every table, and
its workers are gone when it ends, also when a page fails. SQLite only: the pool is."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.metrics.db.migrate import upgrade
from services.metrics.db.sql import Customer
from services.metrics.ingest import apply_events, derive_everything
from services.metrics.rebuild_pool import DerivationPool, Write, database_file, derive_in_pool
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, DemandType, Event
from tests.support.factories import case_event, demand_classified, demand_labelled, varied_demands

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
PAGE = 3  # customers per page: many pages, more than the pool's window in flight


def _events() -> list[Event]:
    """Customers with several demands over two days, causes, handling times, cases opened,
    fulfilled and reopened, relabels (one without a source, as old labels are), and a
    customer with case events only (the derivation's second pass)."""
    events: list[Event] = [*varied_demands(40, customers=13, start=T0, case_refs=True)]
    for n in range(13):
        kinds = [CaseEventType.FULFILLED] + ([CaseEventType.REOPENED] if n % 5 == 0 else [])
        events += [
            case_event(id=f"e-{n}-{k}", customer_ref=f"C-{n}", case_ref=f"K-{n}", type=kind,
                       occurred_at=T0 + (50 + n + k) * HOUR, purpose="billing")
            for k, kind in enumerate(kinds)
        ]  # fmt: skip
    events += [
        case_event(id="e-only", customer_ref="C-none", case_ref="K-none",
                   type=CaseEventType.FULFILLED, occurred_at=T0 + 3 * HOUR),
        demand_labelled(id="l-1", demand_id="d-1", labelled_at=T0 + 70 * HOUR,
                        purpose="move home", demand_type=DemandType.VALUE),
        demand_labelled(id="l-2", demand_id="d-4", labelled_at=T0 + 71 * HOUR,
                        purpose="billing", demand_type=DemandType.FAILURE,
                        failure_kind="not_done_right"),
        demand_labelled(id="l-3", demand_id="d-7", demand_source=None,
                        labelled_at=T0 + 72 * HOUR, purpose="repair"),
    ]  # fmt: skip
    random.Random(5).shuffle(events)
    return events


async def _load(path: Path, events: list[Event]) -> Any:
    """The events stored as a rebuild's load stores them, nothing derived yet."""
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    for start in range(0, len(events), 10):
        async with sessions.begin() as session:
            await apply_events(session, events[start : start + 10], derive=False)
    return engine, sessions


def _contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: sorted(connection.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}


async def test_the_pool_derives_what_the_rebuilds_own_process_derives(tmp_path: Path) -> None:
    events = _events()
    here, pooled = tmp_path / "here.db", tmp_path / "pooled.db"
    engine, sessions = await _load(here, events)
    try:
        assert await derive_everything(sessions, customers_per_transaction=PAGE) == 14
    finally:
        await engine.dispose()
    engine, sessions = await _load(pooled, events)
    try:
        with DerivationPool(pooled, workers=2) as pool:
            done = await derive_in_pool(sessions, pool, customers_per_transaction=PAGE)
        assert done == 14
    finally:
        await engine.dispose()

    expected, found = _contents(here), _contents(pooled)
    # The derived tables were written, by the pool too: a comparison of empty tables
    # would prove nothing.
    for table in ("demand_facts", "cases", "demand_days", "case_days", "open_case_counts"):
        assert expected[table], table
    with closing(sqlite3.connect(pooled)) as connection:
        customers = {c for (c,) in connection.execute("SELECT customer_ref FROM cases")}
    assert customers >= {"C-none", "C-0"}
    assert found == expected


async def test_a_page_that_fails_fails_the_derivation_and_stops_the_workers(
    tmp_path: Path,
) -> None:
    engine, sessions = await _load(tmp_path / "loaded.db", _events())
    elsewhere = tmp_path / "empty.db"  # the workers read a file without the tables
    sqlite3.connect(elsewhere).close()
    try:
        # Raised in a worker (only a worker reads that file), so the workers ran.
        with (
            pytest.raises(sqlite3.OperationalError, match="no such table"),
            DerivationPool(elsewhere, workers=1) as pool,
        ):
            await derive_in_pool(sessions, pool, customers_per_transaction=PAGE)
    finally:
        await engine.dispose()
    assert multiprocessing.active_children() == []


async def test_a_cancelled_derivation_stops_its_workers(tmp_path: Path) -> None:
    """Ctrl-C: asyncio.run cancels the rebuild's task; the pages not written are dropped
    and the pool's exit waits for the workers to end."""
    many: list[Event] = [
        demand_classified(id=f"m-{n}", customer_ref=f"M-{n}", occurred_at=T0 + n * HOUR)
        for n in range(200)
    ]
    path = tmp_path / "loaded.db"
    engine, sessions = await _load(path, _events() + many)
    submitted = asyncio.Event()
    try:
        with DerivationPool(path, workers=1) as pool:
            submit = pool.submit

            def noted(customers: Sequence[Customer]) -> Future[list[Write]]:
                submitted.set()
                return submit(customers)

            pool.submit = noted  # type: ignore[method-assign]
            deriving = asyncio.create_task(
                derive_in_pool(sessions, pool, customers_per_transaction=PAGE)
            )
            await submitted.wait()
            deriving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await deriving
    finally:
        await engine.dispose()
    assert multiprocessing.active_children() == []
    with closing(sqlite3.connect(path)) as connection:
        (facts,) = connection.execute("SELECT count(*) FROM demand_facts").fetchone()
    assert facts < len(many), "cancelled before the last page"


def test_only_a_sqlite_file_is_given_to_workers(tmp_path: Path) -> None:
    assert database_file(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}") == tmp_path / "m.db"
    assert database_file("sqlite+aiosqlite:///:memory:") is None
    assert database_file("sqlite+aiosqlite://") is None
    assert database_file("postgresql+asyncpg://u:p@localhost/metrics") is None
