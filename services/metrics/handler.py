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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics.audit import AuditPolicy
from services.metrics.domain.causes import cause_label
from services.metrics.ingest import (
    BatchOutcome,
    PreparedLive,
    apply_events,
    apply_prepared,
    by_kind,
)
from services.metrics.metrics import MetricsServiceMetrics
from shared.database.errors import refused_by_the_database
from shared.events import Channel, DemandClassified, DemandType, Event
from shared.kafka.codec import decode
from shared.kafka.consumer import BatchResult, Inbound, Rejection, RetryableError

Consumed = tuple[str, DemandType, Channel, str | None]  # purpose, type, channel, failure kind
Failures = tuple[str, str | None, str]  # purpose, failure kind, cause


@dataclass
class DemandCounts:
    """A batch's applied demands counted per label set: ``demands_consumed`` and
    ``failure_demands`` are each incremented once a label set."""

    consumed: Counter[Consumed] = field(default_factory=Counter)
    failures: Counter[Failures] = field(default_factory=Counter)


def demand_counts(demands: Sequence[DemandClassified]) -> DemandCounts:
    # Counted per label set, then one inc each: a batch's thousand demands fall in a few
    # label sets, and each labels() lookup takes the counter's lock. Keyed by the enum
    # members (hashed as they are), their values taken once a set, not per demand.
    counts = DemandCounts()
    consumed, failures = counts.consumed, counts.failures
    for event in demands:
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
    return counts


class PreparedMessages(Sequence[Inbound[Any]]):
    """A batch whose records were decoded and made ready in the live decoder's worker
    process (live_decode.py): the values apply_prepared needs, the messages whose events
    cannot be stored (with why), and the applied demands' counts. Its messages (a record's
    Inbound, its event not decoded here) are made only when asked for: a batch applied
    whole never reads them, and making them all was ~1.5-2 µs a record of the service's
    ~50 µs a live event (a frozen dataclass's __init__). A batch isolated after a failure
    (the runner's one by one) reads them; a message handled on its own comes as a plain
    list, is decoded here and applied by apply_events, as any batch."""

    def __init__(
        self,
        size: int,
        message: Callable[[int], Inbound[Any]],
        prepared: PreparedLive,
        refused: Sequence[tuple[int, str]],
        counts: DemandCounts,
    ) -> None:
        self._size = size
        self._message = message  # the message at a position, made on demand
        self._messages: list[Inbound[Any]] | None = None
        self.prepared = prepared
        self.refused = [(self[i], why) for i, why in refused]
        self.counts = counts

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> Inbound[Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[Inbound[Any]]: ...
    def __getitem__(self, index: int | slice) -> Inbound[Any] | list[Inbound[Any]]:
        if self._messages is None:
            self._messages = [self._message(i) for i in range(self._size)]
        return self._messages[index]


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
        if isinstance(messages, PreparedMessages):
            return await self._apply_prepared(messages)
        # A message of a prepared batch handled on its own (isolated after a failure) is
        # decoded here.
        events = [
            m.event.decoded() if isinstance(m.event, Undecoded) else m.event for m in messages
        ]
        outcome = await self._in_transaction(
            lambda session: apply_events(session, events, self._audit)
        )
        if not outcome.refused:  # the common batch: every event applied
            return BatchResult(
                after_commit=lambda: self._committed(demand_counts(by_kind(events)[0]), outcome)
            )
        refused = {id(r.event): r.reason for r in outcome.refused}
        applied = [e for e in events if id(e) not in refused]
        return BatchResult(
            rejected=[
                Rejection(m, f"cannot be stored: {refused[id(e)]}")
                for m, e in zip(messages, events, strict=True)
                if id(e) in refused
            ],
            after_commit=lambda: self._committed(demand_counts(by_kind(applied)[0]), outcome),
        )

    async def _apply_prepared(self, messages: PreparedMessages) -> BatchResult:
        prepared, counts = messages.prepared, messages.counts
        outcome = await self._in_transaction(
            lambda session: apply_prepared(session, prepared, self._audit)
        )
        return BatchResult(
            rejected=[Rejection(m, f"cannot be stored: {why}") for m, why in messages.refused],
            after_commit=lambda: self._committed(counts, outcome),
        )

    async def _in_transaction(
        self, apply: Callable[[AsyncSession], Awaitable[BatchOutcome]]
    ) -> BatchOutcome:
        try:
            async with self._sessions.begin() as session:
                return await apply(session)
        except DBAPIError as error:
            if refused_by_the_database(error):
                raise  # the records' fault: the runner isolates and dead-letters them
            # The database is away: not the records' fault, so retry rather than dead-letter.
            raise RetryableError(f"database unavailable: {error}") from error
        except OSError as error:
            raise RetryableError(f"database unavailable: {error}") from error

    def _committed(self, counts: DemandCounts, outcome: BatchOutcome) -> None:
        for (purpose, demand_type, channel, kind), n in counts.consumed.items():
            self._metrics.demands_consumed.labels(
                purpose, demand_type.value, channel.value, kind or "none"
            ).inc(n)
        for (purpose, kind, cause), n in counts.failures.items():
            self._metrics.failure_demands.labels(purpose, kind or "none", cause).inc(n)
        for case in outcome.newly_fulfilled:
            self._metrics.end_to_end.labels(case.purpose, case.channel).observe(
                case.end_to_end_seconds
            )
        if self._on_changed is not None and outcome.purposes:
            self._on_changed(outcome.purposes)


class Undecoded:
    """A record's value not decoded in this process (live_decode.py decodes it in its worker):
    the event of a PreparedMessages' message."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: type[Event], value: bytes) -> None:
        self.kind = kind
        self.value = value

    def decoded(self) -> Event:
        return decode(self.kind, self.value)
