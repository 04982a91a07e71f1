"""Accepting events: claim their ids, publish them, and only then say yes.

The order is what makes a 202 trustworthy (docs/services/intake.md, "crash windows"):
claim in the ledger, publish and wait for ``acks=all``, confirm in the ledger. A refusal
by the broker releases the claims, so the sender's retry is published, not "duplicate".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.intake.cloudevents import EventKind
from services.intake.db.repository import EventKey
from services.intake.ledger import Claim, IdempotencyLedger, LedgerUnavailable, new_token
from services.intake.metrics import NO_CHANNEL, IntakeMetrics
from shared.events import CaseEvent, DemandLabelled, DemandReceived, Event
from shared.kafka.codec import OutboundRecord, encode_all
from shared.kafka.producer import ManagedProducer
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name

log = logging.getLogger(__name__)

TOPIC_OF_KIND: dict[EventKind, Topic] = {
    "demand": Topic.DEMAND_RECEIVED,
    "case_event": Topic.CASE_EVENTS,
    "label": Topic.DEMAND_LABELS,
}


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IN_FLIGHT = "in_flight"


def kind_of(event: Event) -> EventKind:
    if isinstance(event, DemandReceived):
        return "demand"
    if isinstance(event, CaseEvent):
        return "case_event"
    if isinstance(event, DemandLabelled):
        return "label"
    raise TypeError(f"intake does not publish {type(event).__name__}")


def key_of(event: Event) -> EventKey:
    """The ledger's key: (kind, source, id). An event is (source, id), so another source's
    use of an id is neither a duplicate nor a hint that the id exists."""
    if isinstance(event, DemandReceived):
        return "demand", event.source, event.id
    if isinstance(event, CaseEvent):
        return "case_event", event.source or "", event.id
    if isinstance(event, DemandLabelled):
        return "label", event.demand_source or "", event.id
    raise TypeError(f"intake does not publish {type(event).__name__}")


@dataclass(frozen=True)
class IntakeService:
    producer: ManagedProducer
    ledger: IdempotencyLedger
    kafka: KafkaSettings
    source_name: str
    metrics: IntakeMetrics

    def ingest(self, events: Sequence[Event], *, key_source: str) -> Awaitable[list[Outcome]]:
        """One outcome per event, in order.

        Raises BrokerUnavailable or LedgerUnavailable when nothing could be promised: the
        caller answers 503 and the sender retries the whole request.

        Not a coroutine: the coroutine of one of the two ways, awaited by the caller (one
        frame less that each resumption of a request's task passes through).
        """
        if len(events) == 1:
            return self._ingest_one(events[0], key_source)
        return self._ingest_all(events, key_source)

    async def _ingest_all(self, events: Sequence[Event], key_source: str) -> list[Outcome]:
        keys: list[EventKey] = [key_of(event) for event in events]
        token = new_token()  # the request's: its claims are confirmed by it, in one row
        claims = await self.ledger.claim(keys, token)
        claimed = [
            (key, event)
            for key, event, claim in zip(keys, events, claims, strict=True)
            if claim is Claim.CLAIMED
        ]
        if claimed:
            await self._publish_claimed(claimed, token)
        outcomes = [_OUTCOME_OF_CLAIM[claim] for claim in claims]
        self._count(events, outcomes, key_source)
        return outcomes

    async def _ingest_one(self, event: Event, key_source: str) -> list[Outcome]:
        """``_ingest_all`` of one event (a single request): the same steps, in the same
        order, without the lists and pairings a batch needs (10.3 -> 9.2 µs, measured)."""
        key = key_of(event)
        token = new_token()
        (claim,) = await self.ledger.claim((key,), token)
        if claim is Claim.CLAIMED:
            records = encode_all(((event, self._topic(event, {})),), source=self.source_name)
            await self._publish([key], records, token)
        outcomes = [_OUTCOME_OF_CLAIM[claim]]
        self._count((event,), outcomes, key_source)
        return outcomes

    async def _publish_claimed(self, claimed: list[tuple[EventKey, Event]], token: bytes) -> None:
        topics: dict[type[Event], str] = {}  # named once per request, not per record
        records = encode_all(
            ((event, self._topic(event, topics)) for _, event in claimed),
            source=self.source_name,
        )
        await self._publish([key for key, _ in claimed], records, token)

    async def _publish(
        self, keys: list[EventKey], records: list[OutboundRecord], token: bytes
    ) -> None:
        """Send the claimed keys' records and wait for acks=all; confirm, or release."""
        started = time.perf_counter()
        try:
            await self.producer.send_and_wait(records)
        except BaseException:
            # Refused, timed out or cancelled (the client went away): let a retry publish.
            # A record the broker took after all is then published twice, and consumers
            # drop the repeat by id.
            try:
                await self.ledger.release(keys, token)
            except LedgerUnavailable as error:
                log.warning("could not release claims, retries wait for the lease: %s", error)
            raise
        self.metrics.ack_seconds.observe(time.perf_counter() - started)
        # Published and acknowledged: the 202 stands whatever happens to the confirmation.
        # Should it fail (or intake die first), the claim expires after the lease and a
        # late retry publishes a repeat that consumers drop by id.
        # The keys are every one this request claimed, with ``token``: one row confirms them.
        self.ledger.confirm_soon(keys, token)

    def _topic(self, event: Event, topics: dict[type[Event], str]) -> str:
        # By the event's class: a dict lookup an event, not kind_of's isinstance checks.
        topic = topics.get(type(event))
        if topic is None:
            topic = topics[type(event)] = topic_name(self.kafka, TOPIC_OF_KIND[kind_of(event)])
        return topic

    def _count(self, events: Sequence[Event], outcomes: list[Outcome], source: str) -> None:
        if len(events) == 1 and type(event := events[0]) is DemandReceived:
            # A single demand (the single route): its counters straight away, not tallied.
            (outcome,) = outcomes
            self._increment(outcome, "demand", str(event.channel), source, 1)
            if outcome is Outcome.ACCEPTED:
                for redaction in event.redactions:
                    self.metrics.redactions.labels(redaction).inc()
            return
        # Tallied first, then one labelled increment per (outcome, kind, channel): a batch of
        # 500 looked its counters' labels up 500 times. Plain dicts, not Counters: a
        # Counter's missing key goes through Python, and a single event made two of them
        # (2.7 against 0.6 µs for one event, 0.6 against 0.3 µs an event of 500, measured).
        tally: dict[tuple[Outcome, EventKind, str], int] = {}
        redactions: dict[str, int] = {}
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(event, DemandReceived):
                # The member itself (a str): its .value is a Python property, read per event.
                key: tuple[Outcome, EventKind, str] = (outcome, "demand", event.channel)
                if outcome is Outcome.ACCEPTED:
                    for redaction in event.redactions:
                        redactions[redaction] = redactions.get(redaction, 0) + 1
            else:
                key = (outcome, kind_of(event), NO_CHANNEL)
            tally[key] = tally.get(key, 0) + 1
        for (outcome, kind, member), count in tally.items():
            # str(): a channel's value, as a label is written
            self._increment(outcome, kind, str(member), source, count)
        for redaction, count in redactions.items():
            self.metrics.redactions.labels(redaction).inc(count)

    def _increment(
        self, outcome: Outcome, kind: EventKind, channel: str, source: str, count: int
    ) -> None:
        """The counter of ``outcome``, by ``count``."""
        metrics = self.metrics
        if outcome is Outcome.ACCEPTED:
            metrics.accepted.labels(kind, channel, source).inc(count)
        elif outcome is Outcome.DUPLICATE:
            metrics.duplicates.labels(kind, channel, source).inc(count)
        else:
            metrics.rejected.labels(kind, source, "in_flight").inc(count)


_OUTCOME_OF_CLAIM = {
    Claim.CLAIMED: Outcome.ACCEPTED,
    Claim.DUPLICATE: Outcome.DUPLICATE,
    Claim.IN_FLIGHT: Outcome.IN_FLIGHT,
}
