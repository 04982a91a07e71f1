"""Accepting a demand: stamp it, check it, publish it, and only then say yes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.intake.metrics import IntakeMetrics
from services.intake.schemas import DemandSubmission
from shared.events import DemandReceived
from shared.kafka.codec import encode
from shared.kafka.producer import ManagedProducer
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name


class InvalidDemand(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Publisher:
    producer: ManagedProducer
    kafka: KafkaSettings
    source_name: str
    metrics: IntakeMetrics

    async def publish_demand(self, demand: DemandReceived) -> None:
        record = encode(
            demand,
            topic=topic_name(self.kafka, Topic.DEMAND_RECEIVED),
            source=self.source_name,
        )
        started = time.perf_counter()
        await self.producer.send_and_wait([record])
        self.metrics.ack_seconds.observe(time.perf_counter() - started)


def to_demand(
    submission: DemandSubmission, *, now: datetime, max_future_skew: timedelta
) -> DemandReceived:
    if submission.occurred_at > now + max_future_skew:
        raise InvalidDemand(
            "occurred_at", f"is in the future (more than {max_future_skew} ahead of intake's clock)"
        )
    if not submission.text.strip():
        raise InvalidDemand("text", "is blank")
    return DemandReceived(
        **submission.model_dump(),
        received_at=now.astimezone(UTC),
    )
