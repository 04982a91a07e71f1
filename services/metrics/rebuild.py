"""`demandscope metrics rebuild`: replay the input topics from the beginning into an empty
database, through the same write path as the live service (services/metrics/ingest.py).

A bounded replay, not a service: it reads every partition from its first offset to the end
offset seen at start, with no consumer group (so it commits nothing and disturbs no one),
and stops. Because derived figures are a function of the set of events stored, the rebuilt
database ends with the same figures as the live one (tests/services/metrics check it).
Records that do not decode are skipped and counted; the live service dead-letters them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import repository
from services.metrics.ingest import apply_events
from services.metrics.subscriptions import consumed_topics
from shared.database.engine import create_engine, session_factory
from shared.events import Event
from shared.kafka.codec import DecodeError, decode
from shared.kafka.settings import KafkaSettings

Progress = Callable[[int, int], None]  # (records done, records in total)


class DatabaseNotEmpty(RuntimeError):
    """A rebuild only fills an empty database, so it cannot double anything."""


@dataclass(frozen=True)
class RebuildReport:
    records: int
    events_applied: int
    undecodable: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events_applied / self.seconds if self.seconds else 0.0


async def rebuild(
    *,
    kafka: KafkaSettings,
    database_url: str,
    batch_size: int = 1000,
    progress: Progress | None = None,
    changes_from_url: str | None = None,
) -> RebuildReport:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    topics = consumed_topics(kafka)
    consumer = AIOKafkaConsumer(
        **kafka.client_options(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_poll_records=batch_size,
    )
    started = time.perf_counter()
    try:
        async with sessions() as session:
            counts = await repository.row_counts(session)
        if any(counts.values()):
            raise DatabaseNotEmpty(f"the database already holds rows: {counts}")
        partitions = await _partitions(kafka, list(topics))
        await consumer.start()
        consumer.assign(partitions)
        firsts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, firsts[tp])
        total = sum(ends[tp] - firsts[tp] for tp in partitions)
        remaining = {tp for tp in partitions if ends[tp] > firsts[tp]}
        done = applied = undecodable = 0
        if progress is not None:
            progress(0, total)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch_size)
            events: list[Event] = []
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue  # arrived after the rebuild started: the live service has it
                    done += 1
                    try:
                        events.append(decode(topics[tp.topic], record.value))
                    except DecodeError:
                        undecodable += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            if events:
                async with sessions.begin() as session:
                    await apply_events(session, events)
                applied += len(events)
            if progress is not None:
                progress(done, total)
        if changes_from_url is not None:
            await _copy_changes(changes_from_url, sessions)
    finally:
        await consumer.stop()
        await engine.dispose()
    return RebuildReport(done, applied, undecodable, time.perf_counter() - started)


async def _partitions(kafka: KafkaSettings, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**kafka.client_options(), client_id="demandscope-rebuild")
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        for partition in sorted(topic["partitions"], key=lambda p: int(p["partition"]))
    ]


async def _copy_changes(source_url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Recorded changes are people's words, not events: carry them over from the old DB."""
    source = create_engine(source_url)
    try:
        async with session_factory(source)() as session:
            changes = await repository.all_changes(session)
    finally:
        await source.dispose()
    async with sessions.begin() as session:
        await repository.copy_changes(session, changes)
