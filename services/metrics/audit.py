"""The audit sample kept as demands arrive, the two queues people work from, and the purge
of the words those queues show.

- **Audit** (``upkeep``, from the write path): for every stratum a batch touched, its
  recorded size (``audit_strata``) moves by the demands the batch newly stored (counted
  only for a stratum without one: the cost of a batch does not grow with the database), its
  inclusion probability is set (domain/audit.py), the items whose draw is no longer below it
  dropped, and the batch's demands whose draw is below it added, each with the machine's
  first label of it (the audit pair's machine half). One synchronous function on the
  connection's thread (sql.run_sync), as the write path's. A label whose reason is "audit"
  completes an item; nothing else does.
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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.db import audit_sample, queues, review_entries, sql
from services.metrics.db.sql import DemandKey
from services.metrics.domain.audit import AuditPlan, week_start
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


class ReceivedDemand(NamedTuple):
    """What the upkeep needs of a demand the batch received: the demand as its event says it
    is to be stored (``audit_sample.Classified``, its week in the stored form) and its words.
    Plain values, so a rebuild's workers can build them (as_received) and hand them over."""

    classified: audit_sample.Classified
    text: str


def as_received(
    demands: Sequence[DemandClassified], day: Callable[[date], Any]
) -> list[ReceivedDemand]:
    """The batch's demands, in its order, for the upkeep; ``day`` stores the week."""
    weeks: dict[date, Any] = {}  # a UTC day's ISO week as stored, once per day
    received = []
    classified, received_demand = audit_sample.Classified, ReceivedDemand
    for event in demands:
        # Off the models' __dict__, as write_path._demand_values reads them (BaseModel's
        # __getattr__ makes every attribute read take CPython's slower hook).
        fields = event.__dict__
        demand = fields["demand"].__dict__
        occurred = demand["occurred_at"]
        # The UTC day by the offset, not by a datetime made in UTC (astimezone: twice a
        # demand, 0.6 µs each, for pydantic's zones).
        offset = occurred.utcoffset()
        utc_day = (occurred - offset).date() if offset else occurred.date()
        week = weeks.get(utc_day)
        if week is None:
            week = weeks[utc_day] = day(week_start(sql.as_utc(occurred)))
        received.append(
            received_demand(
                classified(
                    demand["source"],
                    demand["id"],
                    fields["purpose"],
                    week,
                    fields["demand_type"]._value_,
                    fields["failure_kind"],
                    fields["model_version"],
                    fields["needs_review"],
                    fields["confidence"],
                    # An aware time, not yet in the stored form (db.time stores it in UTC;
                    # the upkeep compares it with another aware time).
                    demand["received_at"],
                ),
                demand["text"],
            )
        )
    return received


async def stored_already_by_key(session: AsyncSession, keys: Sequence[DemandKey]) -> set[DemandKey]:
    """Which of these demands were stored before the batch: called before the batch stores
    them (after their locks), so that the upkeep counts only the demands it adds."""
    if not keys:
        return set()
    return await sql.run_sync(session, partial(audit_sample.stored_already, demands=keys))


def upkeep(
    db: sql.SyncDb,
    demands: Sequence[DemandClassified],
    policy: AuditPolicy,
    *,
    stored_before: set[DemandKey] | None,
    now: datetime | None = None,
) -> None:
    """Bring the sample of every stratum the batch touched up to date, and keep the words
    of the batch's demands that are in a queue. Runs after the demands are stored, in the
    batch's transaction, on its connection (ingest runs it in the batch's one hop to the
    database's thread); redelivery changes nothing (the sample is a function of the set of
    demands stored).

    ``stored_before`` (audit_sample.stored_already before the batch stored its demands): a
    stratum's size moves by the demands the batch added, not counted again. None: every
    touched stratum is counted (as it is anyway when it has no recorded size yet)."""
    if demands:
        _upkeep(
            db,
            received=as_received(demands, db.day),
            stored_before=stored_before,
            policy=policy,
            kept_since=_kept_since(policy, now),
        )


def upkeep_received(
    db: sql.SyncDb,
    received: Sequence[ReceivedDemand],
    policy: AuditPolicy,
    *,
    stored_before: set[DemandKey] | None,
    now: datetime | None = None,
) -> None:
    """upkeep of demands already made ReceivedDemand (as_received, with ``db.day``): a live
    batch prepared in the decoder's worker process (ingest.prepare_live)."""
    if received:
        _upkeep(
            db,
            received=received,
            stored_before=stored_before,
            policy=policy,
            kept_since=_kept_since(policy, now),
        )


async def draw_audit_received(
    session: AsyncSession,
    received: Sequence[ReceivedDemand],
    policy: AuditPolicy,
    *,
    stored_before: set[DemandKey] | None = None,
    now: datetime | None = None,
) -> None:
    """upkeep of demands already made ReceivedDemand (as_received, with the database's
    stored form of a day), through the session: a rebuild's load, whose workers decode the
    events."""
    if not received:
        return
    await _draw(session, lambda _day: received, policy, stored_before, now)


def _kept_since(policy: AuditPolicy, now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=policy.queues.retention_days)


async def _draw(
    session: AsyncSession,
    received: Callable[[Callable[[date], Any]], Sequence[ReceivedDemand]],
    policy: AuditPolicy,
    stored_before: set[DemandKey] | None,
    now: datetime | None,
) -> None:
    kept_since = _kept_since(policy, now)
    await sql.run_sync(
        session,
        lambda db: _upkeep(
            db,
            received=received(db.day),
            stored_before=stored_before,
            policy=policy,
            kept_since=kept_since,
        ),
    )


def _upkeep(
    db: sql.SyncDb,
    *,
    received: Sequence[ReceivedDemand],
    stored_before: set[DemandKey] | None,
    policy: AuditPolicy,
    kept_since: datetime,
) -> None:
    """The upkeep's work as one synchronous function (sql.run_sync): on SQLite all its
    statements go to sqlite3 in one hop to aiosqlite's thread."""
    plan = policy.plan
    stored, is_new = _as_stored(db, received, stored_before)
    strata = sorted({(row.purpose, row.week_start) for row in stored})
    audit_sample.lock_strata(db, [(p, db.read_day(w)) for p, w in strata])
    kept = audit_sample.strata_as_kept(db, strata)
    added = Counter(
        (row.purpose, row.week_start) for row, new in zip(stored, is_new, strict=True) if new
    )
    now_kept: dict[tuple[str, Any], audit_sample.StratumState] = {}
    left_audit: list[DemandKey] = []
    for stratum in strata:
        before = kept.get(stratum)
        if before is None or stored_before is None:
            population = audit_sample.count_stratum(db, stratum)
        else:
            population = before.population + added[stratum]
        state = audit_sample.StratumState(population, plan.inclusion_probability(population))
        now_kept[stratum] = state
        # p(N) never grows with N: the items are those with a draw below the recorded
        # probability, so only a lower one (or a stratum kept for the first time) drops any.
        if before is None or state.inclusion_probability < before.inclusion_probability:
            left_audit += audit_sample.shrink_stratum(db, stratum, state.inclusion_probability)
    audit_sample.record_strata(
        db, {stratum: state for stratum, state in now_kept.items() if kept.get(stratum) != state}
    )
    members: list[dict[str, Any]] = []
    queued: list[dict[str, Any]] = []
    review_below = policy.queues.review_below
    for row in stored:
        draw = plan.draw(row.demand_id)
        in_audit = draw < now_kept[(row.purpose, row.week_start)].inclusion_probability
        if in_audit:
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
        if not (in_audit or row.needs_review or row.confidence < review_below):
            continue
        received_at = row.received_at
        if not isinstance(received_at, datetime):
            received_at = db.read_time(received_at)
        if received_at >= kept_since:
            queued.append(
                {
                    "source": row.source,
                    "demand_id": row.demand_id,
                    "text": None,  # below: few demands are queued, so their words only
                    "received_at": db.time(received_at),
                }
            )
    if queued:
        texts: dict[DemandKey, str] = {}
        for demand in received:  # a demand twice in the batch: its first words
            texts.setdefault(demand.classified.key, demand.text)
        for item in queued:
            item["text"] = texts[(item["source"], item["demand_id"])]
    audit_sample.add_audit_items(db, members)
    audit_sample.add_queue_texts(db, queued)
    # The batch's demands may now wait for review (or be audit items instead), and those
    # that left the sample may wait again. A demand new in this batch has an entry only if
    # its words were kept just now (an entry needs them, and nothing else keeps them), so
    # the others need no refresh.
    refreshed = [row.key for row, new in zip(stored, is_new, strict=True) if not new]
    refreshed += [(row["source"], row["demand_id"]) for row in queued]
    review_entries.refresh_in(db, refreshed + left_audit)


def _as_stored(
    db: sql.SyncDb, received: Sequence[ReceivedDemand], stored_before: set[DemandKey] | None
) -> tuple[list[audit_sample.Classified], list[bool]]:
    """The batch's demands as stored (first classified), and whether the batch added each.
    A demand the batch added, once, is stored as its event says: taken from the event, not
    read back; the others (stored before, or twice in the batch) are read."""
    if stored_before is None:
        stored = audit_sample.classified(db, {d.classified.key for d in received})
        return stored, [False] * len(stored)
    keys = [d.classified.key for d in received]  # each key made once
    unique = set(keys)
    if len(unique) == len(keys) and unique.isdisjoint(stored_before):
        # The common batch: every demand new, once: nothing to read back.
        return [d.classified for d in received], [True] * len(keys)
    times = Counter(keys)
    read = {key for key, n in times.items() if n > 1 or key in stored_before}
    stored = audit_sample.classified(db, read)
    is_new = [row.key not in stored_before for row in stored]
    stored += [d.classified for d, key in zip(received, keys, strict=True) if key not in read]
    is_new += [True] * (len(stored) - len(is_new))
    return stored, is_new


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
