"""Publishes PurposeMetrics to the compacted purpose.metrics topic, debounced.

Batches mark their purposes dirty; after ``debounce_s`` of gathering, each dirty purpose's
figures are computed once and published keyed by purpose, so the topic holds the latest
figures of every purpose and a new subscriber reads them all from the beginning. Every
purpose is marked dirty at start, so figures lost to a crash between commit and publish
are published again. A purpose whose publish fails stays dirty and is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import repository
from services.metrics.measures import ChartSettings, purpose_metrics
from services.metrics.metrics import MetricsServiceMetrics
from shared.events import PurposeMetrics
from shared.kafka.codec import OutboundRecord, encode

log = logging.getLogger(__name__)

Send = Callable[[list[OutboundRecord]], Awaitable[None]]


class PurposeMetricsPublisher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        send: Send,
        topic: str,
        source: str,
        metrics: MetricsServiceMetrics,
        chart_settings: ChartSettings,
        window_days: int,
        debounce_s: float,
    ) -> None:
        self._sessions = sessions
        self._send = send
        self._topic = topic
        self._source = source
        self._metrics = metrics
        self._chart_settings = chart_settings
        self._window_days = window_days
        self._debounce_s = debounce_s
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def mark_changed(self, purposes: set[str]) -> None:
        self._dirty |= purposes
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="purpose-metrics-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            async with self._sessions() as session:
                self.mark_changed(set(await repository.all_purposes(session)))
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._debounce_s)  # gather the changes of the next batches
            self._wake.clear()
            try:
                await self.publish_dirty()
            except Exception:
                log.exception("publishing purpose metrics failed; will try again")
                self._wake.set()

    async def publish_dirty(self) -> list[PurposeMetrics]:
        purposes, self._dirty = sorted(self._dirty), set()
        if not purposes:
            return []
        now = datetime.now(UTC)
        try:
            async with self._sessions() as session:
                figures = [
                    await purpose_metrics(
                        session,
                        purpose,
                        settings=self._chart_settings,
                        window_days=self._window_days,
                        now=now,
                    )
                    for purpose in purposes
                ]
            await self._send([encode(f, topic=self._topic, source=self._source) for f in figures])
        except Exception:
            self._dirty |= set(purposes)
            raise
        for figure in figures:
            self._metrics.record_purpose(figure)
        self._metrics.published.inc(len(figures))
        return figures
