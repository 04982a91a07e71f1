"""`metrics rebuild` of a topic written in transactions, as the classifier writes
demand.classified: it reads to the end (markers and aborted records take offsets that no
consumer is handed) and applies the committed records only, each once."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from services.metrics.db import system_changes
from services.metrics.db.migrate import upgrade
from services.metrics.db.tables import Demand
from services.metrics.rebuild import rebuild
from shared.database.engine import create_engine, session_factory
from shared.events import DemandClassified, DemandType
from shared.kafka.codec import encode
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import demand_classified

pytestmark = pytest.mark.integration

T0 = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
TRANSACTIONS = 6  # of DEMANDS_EACH demands; every third one is aborted
DEMANDS_EACH = 5


def _demands(transaction: int) -> list[DemandClassified]:
    return [
        demand_classified(
            id=f"d-{transaction}-{n}",
            customer_ref=f"C-{transaction}-{n}",
            occurred_at=T0 + timedelta(minutes=transaction * 10 + n),
            purpose="billing",
            demand_type=DemandType.FAILURE if n == 0 else DemandType.VALUE,
            failure_kind="repeat" if n == 0 else None,
        )
        for n in range(DEMANDS_EACH)
    ]


async def test_a_rebuild_of_a_transactional_topic_reads_to_its_end_and_only_what_committed(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topic = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    producer = AIOKafkaProducer(
        **kafka_settings.client_options(),
        acks="all",
        enable_idempotence=True,
        transactional_id=f"test-rebuild-{uuid.uuid4().hex[:8]}",
    )
    committed: list[DemandClassified] = []
    aborted: list[DemandClassified] = []
    markers = 0
    await producer.start()
    try:
        # The topic ends with a transaction's marker, after an aborted transaction's
        # records: a read that waits for the record at end - 1 would never stop.
        for transaction in range(TRANSACTIONS):
            demands = _demands(transaction)
            abort = transaction % 3 == 1
            await producer.begin_transaction()
            sent = []
            for demand in demands:
                record = encode(demand, topic=topic, source="test")
                sent.append(
                    await producer.send(topic, record.value, key=record.key, headers=record.headers)
                )
            # One commit or abort marker in each partition the transaction wrote to.
            markers += len({(await delivered).partition for delivered in sent})
            if abort:
                await producer.abort_transaction()
                aborted += demands
            else:
                await producer.commit_transaction()
                committed += demands
    finally:
        await producer.stop()

    url = f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}"
    await asyncio.to_thread(upgrade, url)
    migrated = _schema(tmp_path / "rebuilt.db")
    report = await asyncio.wait_for(
        # workers=0: the derivation in the rebuild's own process (the setting off); the
        # pool is on in the other rebuilds (test_service, test_signals, test_audit).
        rebuild(kafka=kafka_settings, database_url=url, batch_size=7, workers=0),
        timeout=120,
    )

    written = len(committed) + len(aborted)
    print(
        f"\ntransactional demand.classified: {written} records written in {TRANSACTIONS} "
        f"transactions ({len(committed)} committed, {len(aborted)} aborted), "
        f"{markers} markers, {report.offsets} offsets; rebuild read {report.records} records, "
        f"applied {report.events_applied}, in {report.seconds:.2f}s"
    )
    assert report.records == report.events_applied == len(committed)
    assert report.undecodable == 0
    # Every record written and every marker take an offset: the end the read reached lies
    # past every record it was handed.
    assert report.offsets == written + markers
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            counts = await system_changes.row_counts(session)
            stored = set((await session.scalars(select(Demand.demand_id))).all())
    finally:
        await engine.dispose()
    assert counts["demands"] == len(committed)
    assert stored == {d.demand.id for d in committed}
    # The derived tables' indexes, dropped for the bulk derivation, are back as migrated.
    assert _schema(tmp_path / "rebuilt.db") == migrated


def _schema(path: Path) -> list[tuple[str, str, str]]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
