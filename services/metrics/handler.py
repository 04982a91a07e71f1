"""Kafka entrypoint of the metrics service: store each event once, then let offsets move."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import repository
from services.metrics.metrics import MetricsServiceMetrics
from shared.events import DemandClassified
from shared.kafka.consumer import BatchResult, Inbound, RetryableError


class StoreClassifiedDemands:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], metrics: MetricsServiceMetrics
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        events: list[DemandClassified] = [m.event for m in messages]
        try:
            async with self._sessions.begin() as session:
                await repository.add_classified_demands(session, events)
        except (OperationalError, DBAPIError, OSError) as error:
            # The database is away: not the records' fault, so retry rather than dead-letter.
            raise RetryableError(f"database unavailable: {error}") from error
        for event in events:
            self._metrics.demands_stored.labels(
                event.purpose, event.demand_type.value, event.demand.channel.value
            ).inc()
        return BatchResult()
