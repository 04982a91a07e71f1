"""The audit sample kept as demands arrive, the two queues people work from, and the purge
of the words those queues show.

- **Audit** (``draw_audit``, from the write path): for every stratum a batch touched, its
  size is counted again, its inclusion probability set (domain/audit.py), the items whose
  draw is no longer below it dropped, and the batch's demands whose draw is below it added,
  each with the machine's first label of it (the audit pair's machine half). A label whose
  reason is "audit" completes an item; nothing else does.
- **Queues** (``audit_queue``, ``review_queue``, read by the API): the audit queue is blind
  (the customer's words, the channel and the time, never the machine's type, purpose or
  confidence); the review queue shows the machine's suggestion, lowest confidence first.
- **Texts** are copied from the classified demand only for demands in a queue, into
  ``queue_texts`` (never into the figures' tables), and purged by ``QueueTextPurge`` once no
  queue needs them or ``queue_text_retention_days`` after intake received them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import audit_sample, queues, review_entries, sql, write_path
from services.metrics.domain.audit import AuditPlan, StratumKey
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.schemas import AuditItem, AuditQueue, ReviewItem, ReviewQueue
from shared.events import DemandClassified
from shared.service.supervisor import BackgroundTask

if TYPE_CHECKING:  # config imports the pages, which import the API, which imports this
    from services.metrics.config import MetricsSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuePolicy:
    """Which demands wait for a person's review, and how long their words are kept."""

    review_below: float = 0.6
    retention_days: int = 30


@dataclass(frozen=True)
class AuditPolicy:
    """What the write path needs to keep the audit and the queues: the sampling design and
    the queues' policy (both from the settings; a rebuild must use the live ones)."""

    plan: AuditPlan = field(default_factory=AuditPlan)
    queues: QueuePolicy = field(default_factory=QueuePolicy)


def audit_policy(settings: MetricsSettings) -> AuditPolicy:
    return AuditPolicy(
        plan=AuditPlan(
            rate=settings.audit_rate,
            min_per_week=settings.audit_min_per_week,
            max_per_week=settings.audit_max_per_week,
            key=settings.audit_key.get_secret_value(),
        ),
        queues=QueuePolicy(
            review_below=settings.review_confidence_below,
            retention_days=settings.queue_text_retention_days,
        ),
    )


async def draw_audit(
    session: AsyncSession,
    demands: Sequence[DemandClassified],
    policy: AuditPolicy,
    *,
    now: datetime | None = None,
) -> None:
    """Bring the sample of every stratum the batch touched up to date, and keep the words
    of the batch's demands that are in a queue. Runs after the demands are stored, in the
    batch's transaction; redelivery changes nothing (the sample is a function of the set
    of demands stored)."""
    if not demands:
        return
    plan = policy.plan
    stored = await audit_sample.first_classifications(
        session, [(d.demand.source, d.demand.id) for d in demands]
    )
    strata: set[StratumKey] = {(row.purpose, row.week_start) for row in stored}
    await write_path.lock_strata(session, sorted(strata))
    sizes = await audit_sample.stratum_sizes(session, strata)
    probability = {stratum: plan.inclusion_probability(sizes[stratum]) for stratum in strata}
    await audit_sample.save_strata(
        session, {stratum: (sizes[stratum], probability[stratum]) for stratum in strata}
    )
    left_audit: list[tuple[str, str]] = []
    for stratum in sorted(strata):
        left_audit += await audit_sample.shrink_audit(session, stratum, probability[stratum])
    members: list[dict[str, Any]] = []
    for row in stored:
        draw = plan.draw(row.demand_id)
        if draw < probability[(row.purpose, row.week_start)]:
            members.append(
                {
                    "source": row.source,
                    "demand_id": row.demand_id,
                    "purpose": row.purpose,
                    "week_start": row.week_start,
                    "draw": draw,
                    "machine_demand_type": row.demand_type,
                    "machine_failure_kind": row.failure_kind,
                    "model_version": row.model_version,
                }
            )
    await audit_sample.add_audit_items(session, members)
    in_audit = {(member["source"], member["demand_id"]) for member in members}
    texts: dict[tuple[str, str], str] = {}
    for event in demands:
        texts.setdefault((event.demand.source, event.demand.id), event.demand.text)
    kept_since = (now or datetime.now(UTC)) - timedelta(days=policy.queues.retention_days)
    await audit_sample.add_queue_texts(
        session,
        [
            {
                "source": row.source,
                "demand_id": row.demand_id,
                "text": texts[(row.source, row.demand_id)],
                "received_at": sql.as_utc(row.received_at),
            }
            for row in stored
            if (
                (row.source, row.demand_id) in in_audit
                or row.needs_review
                or row.confidence < policy.queues.review_below
            )
            and sql.as_utc(row.received_at) >= kept_since
        ],
    )
    # The batch's demands may now wait for review (or be audit items instead), and those
    # that left the sample may wait again.
    await review_entries.refresh(
        session, [(row.source, row.demand_id) for row in stored] + left_audit
    )


async def audit_queue(
    session: AsyncSession, *, limit: int, source: str | None = None
) -> AuditQueue:
    """``source``: that source's items only (a source's own key); None: every source's."""
    total, rows = await queues.audit_queue(session, limit=limit, source=source)
    return AuditQueue(
        open=total,
        items=[
            AuditItem(
                source=row.source,
                demand_id=row.demand_id,
                channel=row.channel,
                occurred_at=row.occurred_at,
                text=row.text,
            )
            for row in rows
        ],
    )


async def review_queue(
    session: AsyncSession,
    *,
    below: float,
    purpose: str | None,
    limit: int,
    source: str | None = None,
) -> ReviewQueue:
    total, rows = await queues.review_queue(
        session, below=below, purpose=purpose, limit=limit, source=source
    )
    return ReviewQueue(
        waiting=total,
        items=[
            ReviewItem(
                source=row.source,
                demand_id=row.demand_id,
                channel=row.channel,
                occurred_at=row.occurred_at,
                text=row.text,
                purpose=row.purpose,
                demand_type=row.demand_type,
                failure_kind=row.failure_kind,
                confidence=row.confidence,
                needs_review=row.needs_review,
                model_version=row.model_version,
            )
            for row in rows
        ],
    )


class QueueTextPurge:
    """Deletes the words no queue needs any more, every ``interval_s``. A background task
    of the supervisor: a database outage ends a round with the error (logged, restarted
    with back-off), never silently."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        policy: QueuePolicy,
        interval_s: float,
        metrics: MetricsServiceMetrics,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._interval_s = interval_s
        self._metrics = metrics

    def background_task(self, name: str = "queue-purge") -> BackgroundTask:
        return BackgroundTask(name=name, run=self.run)

    async def run(self) -> None:
        while True:
            await self.purge_once()
            await asyncio.sleep(self._interval_s)

    async def purge_once(self, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._policy.retention_days)
        async with self._sessions.begin() as session:
            purged = await queues.purge_queue_texts(
                session, received_before=cutoff, review_below=self._policy.review_below
            )
        if purged:
            log.info("purged the words of %d demands no queue needs", purged)
            self._metrics.queue_texts_purged.inc(purged)
        return purged
