"""The write path's reads of the touched customers start from the temporary table on SQLite.

SQLite keeps no statistics here, and with the customers' table joined second it scanned every
stored demand or case per batch (0.4-1.5 s at a million demands, holding the one writer lock
the review desk waits for). The plans are read with EXPLAIN QUERY PLAN, not timed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.metrics.db import write_path
from services.metrics.db.migrate import upgrade
from tests.support.query_plans import sqlite_plans

READS = ["_DEMANDS", "_CASE_EVENTS", "_LABELS", "_CASES"]


@pytest.mark.parametrize("read", READS)
async def test_each_read_scans_the_touched_customers_and_searches_the_stored_rows(
    tmp_path: Path, read: str
) -> None:
    path = tmp_path / "metrics.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")
    [plan] = sqlite_plans(
        path, [(getattr(write_path, read), ())], setup=[write_path._TOUCHED_SQLITE]
    )

    # Of a stored table, only the touched customers are scanned (an old label's check also
    # scans the sources it found, a row each: DEMAND_SOURCES's own rows, s and demand_sources).
    scans = [step for step in plan if step.startswith("SCAN")]
    assert scans, plan
    assert all(step in ("SCAN t", "SCAN s", "SCAN demand_sources") for step in scans), plan
    assert "SCAN t" in scans, plan
