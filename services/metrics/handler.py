"""Kafka entrypoint of the metrics service: apply each batch in one database transaction.

The runner commits the batch's offsets only after this returns, i.e. after the database
commit; a crash in between redelivers the batch, and the idempotent writes make that
harmless. Instruments and the publisher hear of the batch only after the offsets commit
(``after_commit``), so a retried batch is never counted twice. An event the write path
refuses (it cannot be stored) is dead-lettered with the field and the reason; a database
that is away is retried, never blamed on the records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.audit import AuditPolicy
from services.metrics.domain.causes import cause_label
from services.metrics.ingest import BatchOutcome, apply_events, by_kind
from services.metrics.metrics import MetricsServiceMetrics
from shared.database.errors import refused_by_the_database
from shared.events import Channel, DemandType
from shared.kafka.consumer import BatchResult, Inbound, Rejection, RetryableError


class ApplyMetricsBatch:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        metrics: MetricsServiceMetrics,
        on_changed: Callable[[set[str]], None] | None = None,
        audit: AuditPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._on_changed = on_changed
        self._audit = audit or AuditPolicy()

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        events = [m.event for m in messages]
        try:
            async with self._sessions.begin() as session:
                outcome = await apply_events(session, events, self._audit)
        except DBAPIError as error:
            if refused_by_the_database(error):
                raise  # the records' fault: the runner isolates and dead-letters them
            # The database is away: not the records' fault, so retry rather than dead-letter.
            raise RetryableError(f"database unavailable: {error}") from error
        except OSError as error:
            raise RetryableError(f"database unavailable: {error}") from error
        if not outcome.refused:  # the common batch: every event applied
            return BatchResult(after_commit=lambda: self._committed(events, outcome))
        refused = {id(r.event): r.reason for r in outcome.refused}
        applied = [m.event for m in messages if id(m.event) not in refused]
        return BatchResult(
            rejected=[
                Rejection(m, f"cannot be stored: {refused[id(m.event)]}")
                for m in messages
                if id(m.event) in refused
            ],
            after_commit=lambda: self._committed(applied, outcome),
        )

    def _committed(self, events: Sequence[Any], outcome: BatchOutcome) -> None:
        # Counted per label set, then one inc each: a batch's thousand demands fall in a few
        # label sets, and each labels() lookup takes the counter's lock. Keyed by the enum
        # members (hashed as they are), their values taken once a set, not per demand.
        consumed: Counter[tuple[str, DemandType, Channel, str | None]] = Counter()
        failures: Counter[tuple[str, str | None, str]] = Counter()
        for event in by_kind(events)[0]:  # the demands, sorted by their class (ingest)
            # Off the model's __dict__: BaseModel's __getattr__ makes each attribute read
            # take CPython's slower hook (ingest.demand_keys).
            fields = event.__dict__
            purpose, demand_type, kind = (
                fields["purpose"],
                fields["demand_type"],
                fields["failure_kind"],
            )
            consumed[(purpose, demand_type, fields["demand"].channel, kind)] += 1
            if demand_type is DemandType.FAILURE:
                failures[(purpose, kind, cause_label(fields["caused_by"]))] += 1
        for (purpose, demand_type, channel, kind), n in consumed.items():
            self._metrics.demands_consumed.labels(
                purpose, demand_type.value, channel.value, kind or "none"
            ).inc(n)
        for (purpose, kind, cause), n in failures.items():
            self._metrics.failure_demands.labels(purpose, kind or "none", cause).inc(n)
        for case in outcome.newly_fulfilled:
            self._metrics.end_to_end.labels(case.purpose, case.channel).observe(
                case.end_to_end_seconds
            )
        if self._on_changed is not None and outcome.purposes:
            self._on_changed(outcome.purposes)
