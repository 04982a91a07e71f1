"""The classifier's migrations build the tables the code declares, on both databases; a
label stored before its reason was kept reads back with none (not an audit label)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from alembic import command
from sqlalchemy import insert

from services.classifier.db import model_tables  # noqa: F401  (its tables join the metadata)
from services.classifier.db.migrate import MIGRATIONS, VERSION_TABLE, upgrade
from services.classifier.db.repository import LabelRepository
from services.classifier.db.tables import ClassifierBase, LabelRow
from shared.database.engine import create_engine
from shared.database.migrations import alembic_config
from tests.support.migrations import schema_differences

BEFORE_REASON = "classifier_0004_text_customer"


async def _differences(database_url: str) -> list[Any]:
    return await schema_differences(database_url, ClassifierBase.metadata, VERSION_TABLE)


async def test_a_label_stored_before_reasons_were_kept_reads_back_with_none(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url, BEFORE_REASON)
    engine = create_engine(database_url)
    try:
        old_label = {
            "demand_source": "test",
            "label_id": "L1",
            "demand_id": "D1",
            "demand_type": "failure",
            "failure_kind": "repeat",
            "purpose": "billing",
            "labelled_at": datetime(2026, 11, 1, tzinfo=UTC),
            "labelled_by": "staff-1",
            "text": "third time I have called",
        }
        async with engine.begin() as connection:  # the columns of that revision only
            await connection.execute(insert(LabelRow).values(old_label))

        await asyncio.to_thread(upgrade, database_url)
        [example] = await LabelRepository(engine).training_examples()
    finally:
        await engine.dispose()

    assert (example.text, example.demand_type, example.reason) == (
        "third time I have called",
        "failure",
        None,
    )
    assert await _differences(database_url) == []


async def test_the_reason_column_goes_down_and_up_again(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    config = alembic_config(MIGRATIONS, database_url)

    await asyncio.to_thread(command.downgrade, config, BEFORE_REASON)
    # reason, and not_a_demand (added after it)
    assert [d[0] for d in await _differences(database_url)] == ["add_column", "add_column"]
    await asyncio.to_thread(upgrade, database_url)
    assert await _differences(database_url) == []


async def test_the_not_a_demand_column_goes_down_and_up_again(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    config = alembic_config(MIGRATIONS, database_url)

    await asyncio.to_thread(command.downgrade, config, "classifier_0005_label_reason")
    assert [(d[0], d[3].name) for d in await _differences(database_url)] == [
        ("add_column", "not_a_demand")
    ]
    await asyncio.to_thread(upgrade, database_url)
    assert await _differences(database_url) == []
