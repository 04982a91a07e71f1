"""Publishes PurposeMetrics to the compacted purpose.metrics topic, debounced.

Batches mark their purposes dirty; after ``debounce_s`` of gathering, each dirty purpose's
figures are computed once and published keyed by purpose, so the topic holds the latest
figures of every purpose and a new subscriber reads them all from the beginning.

Computing a purpose's figures also raises the special-cause signals on its charts, in the same
transaction (services/metrics/signals.py): each is recorded once in the database, counted by
the replica that recorded it, and sent to capability.signals by the outbox.

``run`` is a background task of the service's supervisor. Its first step marks every
purpose dirty, so figures lost to a crash between commit and publish are published again;
if that step fails (the database is away), ``run`` raises and the supervisor logs it and
runs it again with back-off, rather than starting without it. A round that fails because
the broker or the database is away keeps its purposes dirty and is tried again; anything
else is a bug and ends ``run`` for the supervisor to see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import measures
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.service import ChartSettings, purpose_metrics
from services.metrics.signals import count_raised, raise_signals, signal_rows
from shared.events import PurposeMetrics
from shared.kafka.codec import OutboundRecord, encode
from shared.kafka.producer import BrokerUnavailable
from shared.ownership import PurposeOwners
from shared.service.supervisor import BackgroundTask

log = logging.getLogger(__name__)

Send = Callable[[list[OutboundRecord]], Awaitable[None]]

# How long a scrape's per-purpose gauges are reused: shorter than any scrape interval, so a
# scrape rarely reads values older than this, and the figures are computed at most this often.
GAUGE_CACHE_S = 10.0

# A publish round that fails for one of these is retried; the figures are not the cause.
TRANSIENT = (BrokerUnavailable, SQLAlchemyError, OSError)


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
        owners: PurposeOwners | None = None,
        on_signals: Callable[[], None] = lambda: None,
        gauge_cache_s: float = GAUGE_CACHE_S,
    ) -> None:
        self._sessions = sessions
        self._send = send
        self._topic = topic
        self._source = source
        self._metrics = metrics
        self._chart_settings = chart_settings
        self._window_days = window_days
        self._debounce_s = debounce_s
        self._owners = owners or PurposeOwners()
        self._on_signals = on_signals  # new signals are committed: the outbox's wake-up
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._gauge_cache_s = gauge_cache_s
        self._gauges_at: float | None = None  # monotonic time of the last refresh
        self._gauge_lock = asyncio.Lock()
        # Per purpose, the signals on its charts as of its last committed round: stored by
        # then (by this replica or another), so the next round inserts only the others. A
        # chart's signals stay on it round after round, and inserting them all again (to
        # find none new) was most of a round: 1,630 signals of six purposes, 0.35 s of CPU.
        self._stored_signals: dict[str, frozenset[str]] = {}

    def background_task(self, name: str = "publisher") -> BackgroundTask:
        # No stop hook: a stop cancels it; purposes left dirty are published at next start.
        return BackgroundTask(name=name, run=self.run)

    def mark_changed(self, purposes: set[str]) -> None:
        self._dirty |= purposes
        self._wake.set()

    async def run(self) -> None:
        """Republish every purpose, then publish what batches mark dirty, until cancelled."""
        await self.republish_all()
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._debounce_s)  # gather the changes of the next batches
            self._wake.clear()
            try:
                await self.publish_dirty()
            except TRANSIENT as error:
                log.warning("publishing purpose metrics failed (%r); will try again", error)
                self._wake.set()

    async def republish_all(self) -> None:
        """Mark every known purpose dirty (the start-up step; raises if the database is away)."""
        async with self._sessions() as session:
            self.mark_changed(set(await measures.all_purposes(session)))

    async def refresh_gauges(self) -> None:
        """Set every purpose's gauges from the shared database (for a scrape), at most once
        per ``gauge_cache_s``: a replica that published none of a purpose's recent figures
        shows the same values as the one that did. A database away keeps the last values."""
        if self._fresh():
            return
        async with self._gauge_lock:  # concurrent scrapes share one refresh
            if self._fresh():
                return
            now = datetime.now(UTC)
            try:
                async with self._sessions() as session:
                    purposes = await measures.all_purposes(session)
                    figures = await self._figures(session, purposes, now)
            except TRANSIENT as error:
                log.warning("refreshing the purpose gauges failed (%r); kept the last", error)
                return
            for figure in figures:
                self._metrics.record_purpose(figure, owner=self._owners.owner_of(figure.purpose))
            self._gauges_at = time.monotonic()

    async def _figures(
        self, session: AsyncSession, purposes: Iterable[str], now: datetime
    ) -> list[PurposeMetrics]:
        """Each purpose's figures, as published and as the gauges show them."""
        return [
            await purpose_metrics(
                session,
                purpose,
                settings=self._chart_settings,
                window_days=self._window_days,
                now=now,
            )
            for purpose in purposes
        ]

    def _fresh(self) -> bool:
        at = self._gauges_at
        return at is not None and time.monotonic() - at < self._gauge_cache_s

    async def publish_dirty(self) -> list[PurposeMetrics]:
        purposes, self._dirty = sorted(self._dirty), set()
        if not purposes:
            return []
        now = datetime.now(UTC)
        try:
            async with self._sessions() as session:
                figures = await self._figures(session, purposes, now)
                raised = []
                on_charts: dict[str, frozenset[str]] = {}
                for figure in figures:
                    rows = signal_rows(
                        figure, owner=self._owners.owner_of(figure.purpose), raised_at=now
                    )
                    stored = self._stored_signals.get(figure.purpose, frozenset())
                    raised += await raise_signals(
                        session, [row for row in rows if row["signal_id"] not in stored]
                    )
                    on_charts[figure.purpose] = frozenset(row["signal_id"] for row in rows)
                await session.commit()
            self._stored_signals |= on_charts  # committed: every one of them is stored
            if raised:
                count_raised(self._metrics, raised)
                self._on_signals()
            await self._send([encode(f, topic=self._topic, source=self._source) for f in figures])
        except BaseException:
            # Not published: keep them for the next round (or the next run, after a restart).
            self._dirty |= set(purposes)
            raise
        for figure in figures:
            self._metrics.record_purpose(figure, owner=self._owners.owner_of(figure.purpose))
        self._metrics.published.inc(len(figures))
        return figures
