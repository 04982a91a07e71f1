"""Migration 0008 (a demand is (source, id)) keeps the rows stored before it valid: each
takes its demand's source, on SQLite and PostgreSQL (issue 10, item 12)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from services.metrics.db.migrate import upgrade
from shared.database.engine import create_engine

pytestmark = pytest.mark.integration

T = "2026-11-02 09:00:00+00:00"
ROWS = [
    "INSERT INTO demands (demand_id, customer_ref, case_ref, channel, source, occurred_at, "
    "received_at, purpose, demand_type, confidence, method, model_version, classified_at, "
    f"week_start) VALUES ('d1', 'C1', 'K1', 'phone', 'demo', '{T}', '{T}', 'billing', "
    f"'value', 0.9, 'rule', 'r1', '{T}', '2026-11-02')",
    "INSERT INTO case_events (event_id, case_ref, customer_ref, type, occurred_at) "
    f"VALUES ('e1', 'K1', 'C1', 'fulfilled', '{T}')",
    "INSERT INTO demand_labels (label_id, demand_id, demand_type, purpose, labelled_by, "
    f"labelled_at) VALUES ('l1', 'd1', 'failure', 'billing', 's1', '{T}')",
    "INSERT INTO demand_labels (label_id, demand_id, demand_type, purpose, labelled_by, "
    f"labelled_at) VALUES ('l2', 'not-yet', 'value', 'billing', 's1', '{T}')",
    "INSERT INTO demand_facts (demand_id, customer_ref, case_id, purpose, demand_type, channel, "
    f"occurred_at, labelled) VALUES ('d1', 'C1', 'K1', 'billing', 'failure', 'phone', '{T}', "
    "true)",
    "INSERT INTO cases (customer_ref, case_id, case_ref, status, measured, started_at, reopened, "
    "contacts, failure_contacts, channels, one_stop, last_activity_at) VALUES ('C1', 'K1', 'K1', "
    f"'fulfilled', true, '{T}', 0, 1, 1, 'phone', true, '{T}')",
    "INSERT INTO audit_items (demand_id, purpose, week_start, draw, machine_demand_type, "
    "model_version) VALUES ('d1', 'billing', '2026-11-02', 0.1, 'value', 'r1')",
    f"INSERT INTO queue_texts (demand_id, text, received_at) VALUES ('d1', 'words', '{T}')",
]
SOURCES = {
    "SELECT source FROM demands": ["demo"],
    "SELECT source FROM case_events": [""],
    "SELECT demand_source FROM demand_labels ORDER BY label_id": ["demo", ""],
    "SELECT source FROM demand_facts": ["demo"],
    "SELECT source FROM cases": ["demo"],
    "SELECT source FROM audit_items": ["demo"],
    "SELECT source FROM queue_texts": ["demo"],
}


async def test_rows_stored_before_take_their_demands_source(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0007")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for row in ROWS:
                await connection.execute(text(row))
        await asyncio.to_thread(upgrade, database_url)
        found: dict[str, Any] = {}
        async with engine.connect() as connection:
            for query in SOURCES:
                found[query] = list((await connection.execute(text(query))).scalars())
            # Another source may now use the id d1.
            await connection.execute(
                text(
                    "INSERT INTO queue_texts (source, demand_id, text, received_at) "
                    f"VALUES ('genesys', 'd1', 'other words', '{T}')"
                )
            )
    finally:
        await engine.dispose()
    assert found == SOURCES
