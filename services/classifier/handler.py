"""Kafka entrypoint of the classifier: demands in, classifications out, in one transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services.classifier.keyword_rules import RULESET_VERSION, judge_by_keywords
from services.classifier.metrics import ClassifierMetrics
from shared.events import DemandClassified, DemandReceived
from shared.kafka.codec import encode
from shared.kafka.consumer import BatchResult, Inbound


class ClassifyDemands:
    def __init__(self, *, output_topic: str, source: str, metrics: ClassifierMetrics) -> None:
        self._output_topic = output_topic
        self._source = source
        self._metrics = metrics
        metrics.model.info({"version": RULESET_VERSION})

    async def __call__(self, messages: Sequence[Inbound[Any]]) -> BatchResult:
        started = time.perf_counter()
        now = datetime.now(UTC)
        result = BatchResult()
        for message in messages:
            demand: DemandReceived = message.event
            judgement = judge_by_keywords(demand.text)
            classified = DemandClassified(
                demand=demand,
                demand_type=judgement.demand_type,
                failure_kind=judgement.failure_kind,
                purpose=judgement.purpose,
                confidence=judgement.confidence,
                method=judgement.method,
                model_version=RULESET_VERSION,
                needs_review=judgement.needs_review,
                classified_at=now,
            )
            result.outbound.append(
                encode(classified, topic=self._output_topic, source=self._source)
            )
            self._metrics.classified.labels(
                classified.demand_type.value, classified.purpose, classified.method.value
            ).inc()
            self._metrics.confidence.observe(classified.confidence)
            if classified.needs_review:
                self._metrics.needs_review.labels(classified.purpose).inc()
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        return result
