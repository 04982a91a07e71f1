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

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import repository
from services.metrics.audit import AuditPolicy
from services.metrics.ingest import apply_events
from services.metrics.subscriptions import consumed_topics
from shared.database.engine import create_engine, session_factory
from shared.events import Event
from shared.kafka.codec import DecodeError, decode
from shared.kafka.read_to_end import read_to_end
from shared.kafka.settings import KafkaSettings

# (offsets read, offsets in total): transaction markers take offsets too, so the records
# read can stay below the total while the offsets reach it.
Progress = Callable[[int, int], None]
_IDLE_S = 60.0  # a replay that stops advancing this long (the broker gone) fails


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
    audit: AuditPolicy | None = None,
) -> RebuildReport:
    """``audit`` must be the live service's (its ``audit_*`` settings), so that the rebuild
    draws the same audit sample."""
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    topics = consumed_topics(kafka)
    started = time.perf_counter()
    done = applied = undecodable = 0
    try:
        async with sessions() as session:
            counts = await repository.row_counts(session)
        if any(counts.values()):
            raise DatabaseNotEmpty(f"the database already holds rows: {counts}")
        # Records that arrive after the start are the live service's: they are not read.
        async with read_to_end(
            kafka,
            list(topics),
            timeout=None,
            idle_timeout=_IDLE_S,
            max_records=batch_size,
            client_id="demandscope-rebuild",
        ) as reader:
            if progress is not None:
                progress(0, reader.total)
            async for batch in reader:
                events: list[Event] = []
                for record in batch:
                    done += 1
                    try:
                        events.append(decode(topics[record.topic], record.value))
                    except DecodeError:
                        undecodable += 1
                if events:
                    async with sessions.begin() as session:
                        await apply_events(session, events, audit)
                    applied += len(events)
                if progress is not None:
                    progress(reader.offsets_read, reader.total)
            if progress is not None:
                progress(reader.offsets_read, reader.total)
        if changes_from_url is not None:
            await _copy_changes(changes_from_url, sessions)
    finally:
        await engine.dispose()
    return RebuildReport(done, applied, undecodable, time.perf_counter() - started)


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
