"""Upgrading from changes as database rows: migration 0009 gives each its event id, and
`metrics changes export-to-topic` puts them on system.changes, once each, where a rebuild
finds them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from services.metrics.changes import export_changes_to_topic
from services.metrics.db import sql, system_changes
from services.metrics.db.migrate import upgrade
from services.metrics.rebuild import rebuild
from shared.database.engine import create_engine, session_factory
from shared.events import SystemChanged
from shared.kafka.codec import decode
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name

pytestmark = pytest.mark.integration

OLD_ROWS = [
    ("move home", datetime(2026, 3, 1, tzinfo=UTC), "Visits booked on the first call", "rey"),
    ("billing", datetime(2026, 3, 5, tzinfo=UTC), "Bills in plain English", None),
]


async def test_changes_recorded_as_rows_are_exported_once_and_rebuilt(
    database_url: str, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    await asyncio.to_thread(upgrade, database_url, "0008")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for purpose, changed_at, note, by in OLD_ROWS:
                await connection.execute(
                    text(
                        "INSERT INTO purpose_changes (purpose, changed_at, note, recorded_at,"
                        " recorded_by) VALUES (:purpose, :at, :note, :at, :by)"
                    ),
                    {"purpose": purpose, "at": changed_at, "note": note, "by": by},
                )
    finally:
        await engine.dispose()
    await asyncio.to_thread(upgrade, database_url)

    first = await export_changes_to_topic(
        database_url=database_url, kafka=kafka_settings, source="test"
    )
    again = await export_changes_to_topic(
        database_url=database_url, kafka=kafka_settings, source="test"
    )

    assert (first.published, first.refused) == (2, [])
    assert again.published == 2
    topic = topic_name(kafka_settings, Topic.SYSTEM_CHANGES)
    events = [decode(SystemChanged, r.value) for r in await read_all(kafka_settings, [topic])]
    assert len(events) == 4
    assert len({e.id for e in events}) == 2  # the same ids twice
    assert {(e.purpose, e.note, e.recorded_by) for e in events} == {
        (purpose, note, by) for purpose, _at, note, by in OLD_ROWS
    }
    # A rebuild from the topic alone has each once, as the old database had them.
    rebuilt = f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}"
    await asyncio.to_thread(upgrade, rebuilt)
    await rebuild(kafka=kafka_settings, database_url=rebuilt)
    shown = {}
    for url in (database_url, rebuilt):
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                shown[url] = sorted(
                    (c.event_id, c.purpose, sql.as_utc(c.changed_at), c.note, c.recorded_by)
                    for c in await system_changes.all_changes(session)
                )
        finally:
            await engine.dispose()
    assert shown[rebuilt] == shown[database_url]
    assert len(shown[rebuilt]) == 2
