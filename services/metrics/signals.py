"""Special-cause signals, raised once across restarts and replicas, and sent to the owning
team on capability.signals through an outbox.

Raising: when the publisher computes a purpose's figures it inserts each signal on its charts
into ``special_cause_signals`` (unique on purpose, measure, rule and point) in the same
transaction, ON CONFLICT DO NOTHING. Only the insert that added a row raises the signal: it
alone counts it in Prometheus and leaves it for the outbox. A restart, a second replica or
a recomputation finds the row there and raises nothing.

Publishing: ``SignalOutbox.run`` (a supervised background task) sends the rows not yet
published with the service's idempotent producer, keyed by purpose, then marks them
published in the same transaction that selected them. A crash between the broker's
acknowledgement and that commit sends them again after restart: delivery is at least once,
and every signal carries its stable ``signal_id`` (also the ce_id) for subscribers to
deduplicate on.

Crash windows: before the figures' transaction commits, nothing was raised (the next round
raises it); after it commits, the row is there and the outbox sends it sooner or later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import signals as signals_db
from services.metrics.db.sql import as_utc
from services.metrics.db.tables import SpecialCauseSignalRow
from services.metrics.metrics import MetricsServiceMetrics
from shared.events import PurposeMetrics, SpecialCauseSignalled
from shared.events.signals import signal_id
from shared.kafka.codec import OutboundRecord, encode
from shared.kafka.producer import BrokerUnavailable
from shared.service.supervisor import BackgroundTask

log = logging.getLogger(__name__)

Send = Callable[[list[OutboundRecord]], Awaitable[None]]

# A round that fails for one of these is tried again at the next wake-up or interval.
TRANSIENT = (BrokerUnavailable, SQLAlchemyError, OSError)


def signal_rows(
    figures: PurposeMetrics, *, owner: str, raised_at: datetime
) -> list[dict[str, Any]]:
    """The rows of the signals on a purpose's charts, each with its chart's limits."""
    charts = {chart.measure: chart for chart in figures.capability}
    rows = []
    for signal in figures.signals:
        chart = charts.get(signal.measure)
        if chart is None:  # a signal always comes with its chart; never raise one without
            continue
        rows.append(
            {
                "signal_id": signal_id(
                    purpose=figures.purpose, measure=signal.measure, rule=signal.rule, at=signal.at
                ),
                "purpose": figures.purpose,
                "measure": signal.measure,
                "rule": signal.rule,
                "point_at": signal.at,
                "owner": owner,
                "value": signal.value,
                "centre_line": chart.centre_line,
                "lower_natural_process_limit": chart.lower_natural_process_limit,
                "upper_natural_process_limit": chart.upper_natural_process_limit,
                "raised_at": raised_at,
                "published_at": None,
            }
        )
    return rows


async def raise_signals(session: AsyncSession, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the signals; the rows this insert raised. The caller commits them with the
    figures, then counts them (``count_raised``): never counted for a commit that failed."""
    added = await signals_db.insert_new_signals(session, rows)
    return [row for row in rows if row["signal_id"] in added]


async def record_as_raised(
    session: AsyncSession, rows: list[dict[str, Any]], *, at: datetime
) -> int:
    """Insert the signals as already raised and published, so nothing counts or sends them:
    for a rebuilt database, whose signals the service it replaces raised long ago. Returns
    how many rows were added."""
    added = await signals_db.insert_new_signals(
        session, [row | {"published_at": at} for row in rows]
    )
    return len(added)


def count_raised(metrics: MetricsServiceMetrics, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        metrics.signals.labels(row["purpose"], row["owner"], row["measure"], row["rule"]).inc()


def event_of(row: SpecialCauseSignalRow) -> SpecialCauseSignalled:
    return SpecialCauseSignalled(
        signal_id=row.signal_id,
        purpose=row.purpose,
        owner=row.owner,
        measure=row.measure,
        rule=row.rule,
        at=as_utc(row.point_at),
        value=row.value,
        centre_line=row.centre_line,
        lower_natural_process_limit=row.lower_natural_process_limit,
        upper_natural_process_limit=row.upper_natural_process_limit,
        raised_at=as_utc(row.raised_at),
    )


class SignalOutbox:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        send: Send,
        topic: str,
        source: str,
        metrics: MetricsServiceMetrics,
        interval_s: float,
        batch: int = 500,
    ) -> None:
        self._sessions = sessions
        self._send = send
        self._topic = topic
        self._source = source
        self._metrics = metrics
        self._interval_s = interval_s
        self._batch = batch
        self._wake = asyncio.Event()

    def background_task(self, name: str = "signal-outbox") -> BackgroundTask:
        # No stop hook: a stop cancels it; what it had not marked is sent at the next start.
        return BackgroundTask(name=name, run=self.run)

    def wake(self) -> None:
        """New signals were committed: send them now rather than at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        """Send what is unpublished, then again at each wake-up or interval, until cancelled.
        The interval also picks up rows a crashed replica left unsent."""
        while True:
            self._wake.clear()
            try:
                await self.publish_pending()
            except TRANSIENT as error:
                log.warning("publishing signals failed (%r); will try again", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)

    async def publish_pending(self) -> int:
        """Send every unpublished signal, a batch per transaction; how many were sent."""
        sent = 0
        while True:
            async with self._sessions() as session, session.begin():
                rows = await signals_db.unpublished(session, limit=self._batch)
                if not rows:
                    return sent
                await self._send(
                    [encode(event_of(r), topic=self._topic, source=self._source) for r in rows]
                )
                await signals_db.mark_published(
                    session, [r.signal_id for r in rows], datetime.now(UTC)
                )
            self._metrics.signals_published.inc(len(rows))
            sent += len(rows)
            if len(rows) < self._batch:
                return sent
