"""Recording a change to the system: publish a ``SystemChanged`` event, then wait briefly
for the consumer to store it.

The change is an event on ``system.changes`` (keyed by purpose) so that the log alone holds
every figure's inputs and ``metrics rebuild`` replays it like the rest. The API and the pages
never write the row themselves: the consumer stores it through the one write path
(services/metrics/ingest.py), the same in a rebuild, so the live and the rebuilt limits agree.

What the person sees: the record is durable once the broker has acknowledged it (acks=all,
idempotent producer), but it shows on the charts only once the consumer has stored it. That
normally takes well under a second, so the recorder waits up to ``visible_within_s`` for the
row: the person then gets the change back (201) and the chart they open next shows it, as
they expect of "record". When the consumer lags (a rebalance, the database away) the wait
ends with the change accepted but not yet shown (202 with where it will appear), which is
true, rather than a failure that would make them record it twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import service
from services.metrics.db import sql, system_changes
from services.metrics.schemas import ChangeOut
from shared.database.engine import create_engine, session_factory
from shared.events import SystemChanged
from shared.kafka.codec import OutboundRecord, encode
from shared.kafka.producer import BrokerUnavailable, create_producer, send_all
from shared.kafka.settings import KafkaSettings
from shared.service.problems import ProblemError
from shared.topics import Topic, topic_name

Send = Callable[[Iterable[OutboundRecord]], Awaitable[None]]
VISIBLE_WITHIN_S = 10.0  # how long a request waits for the consumer to store its change
_POLL_S = 0.05


class ChangeRecorder:
    def __init__(
        self,
        *,
        send: Send,
        kafka: KafkaSettings,
        source: str,
        sessions: async_sessionmaker[AsyncSession],
        visible_within_s: float = VISIBLE_WITHIN_S,
    ) -> None:
        self._send = send
        self._topic = topic_name(kafka, Topic.SYSTEM_CHANGES)
        self._source = source
        self._sessions = sessions
        self.visible_within_s = visible_within_s

    async def record(self, change: SystemChanged) -> ChangeOut | None:
        """Publish ``change`` (a 503 problem when the broker does not acknowledge it: nothing
        was recorded), then the stored change, or None when it is not stored in time."""
        try:
            await self._send([encode(change, topic=self._topic, source=self._source)])
        except BrokerUnavailable as error:
            raise ProblemError(
                503,
                "Broker unavailable",
                detail="The change could not be recorded; submit it again.",
                headers={"Retry-After": "5"},
            ) from error
        deadline = time.monotonic() + self.visible_within_s
        while True:
            async with self._sessions() as session:
                stored = await service.stored_change(session, change.id)
            if stored is not None or time.monotonic() >= deadline:
                return stored
            await asyncio.sleep(_POLL_S)


@dataclass(frozen=True)
class ExportReport:
    published: int
    refused: list[str]  # why each row that cannot be an event was left out


async def export_changes_to_topic(
    *, database_url: str, kafka: KafkaSettings, source: str
) -> ExportReport:
    """The one-time import of changes recorded before they were events: every row of the
    database onto ``system.changes`` under the id migration 0009 gave it. The consumer
    stores by that id, so the rows it already has are unchanged and a second export
    publishes duplicates that change nothing."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = await system_changes.all_changes(session)
    finally:
        await engine.dispose()
    events: list[SystemChanged] = []
    refused: list[str] = []
    for row in rows:
        try:
            events.append(
                SystemChanged(
                    id=row.event_id,
                    purpose=row.purpose,
                    changed_at=sql.as_utc(row.changed_at),
                    note=row.note,
                    recorded_at=sql.as_utc(row.recorded_at),
                    recorded_by=row.recorded_by,
                )
            )
        except ValidationError as error:
            refused.append(f"change {row.event_id}: {error.errors()[0]['msg']}")
    topic = topic_name(kafka, Topic.SYSTEM_CHANGES)
    producer = create_producer(kafka, client_id="demandscope-metrics-changes-export")
    await producer.start()
    try:
        await send_all(producer, [encode(e, topic=topic, source=source) for e in events])
    finally:
        await producer.stop()
    return ExportReport(published=len(events), refused=refused)
