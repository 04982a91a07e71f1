"""What the Kafka entrypoint does when the label store fails: an outage (or a store not yet
migrated) is retried, never dead-lettered; values the database refuses are a record's fault."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.classifier.context import ContextStore
from services.classifier.db.migrate import upgrade
from services.classifier.db.repository import LabelRepository
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.live_model import in_use
from services.classifier.metrics import ClassifierMetrics
from services.classifier.training import TrainedModel
from shared.database.engine import create_engine
from shared.events import DemandClassified
from shared.kafka.codec import decode
from shared.kafka.consumer import Inbound, RetryableError
from tests.support.factories import case_event, demand_labelled, demand_received

TOPICS = Topics(classified="classified", context="context", forwarded_labels="forwarded")


def classify_demands(
    engine: AsyncEngine, seed_model: TrainedModel, registry: CollectorRegistry | None = None
) -> ClassifyDemands:
    """The handler as the service wires it, on the seed model and the given label store
    (its metrics in ``registry``, a new one by default)."""
    return ClassifyDemands(
        topics=TOPICS,
        source="test",
        model=lambda: in_use("seed", seed_model.model),
        context=ContextStore(window=timedelta(days=30)),
        labels=LabelRepository(engine),
        thresholds=Thresholds(),
        metrics=ClassifierMetrics(registry or CollectorRegistry()),
    )


def _inbound(event: Any, topic: str = "demands", key: bytes | None = None) -> Inbound[Any]:
    return Inbound(
        topic=topic,
        partition=0,
        offset=0,
        key=key if key is not None else getattr(event, "customer_ref", "").encode() or None,
        event=event,
        headers=[],
        timestamp_ms=0,
    )


async def test_a_label_store_not_migrated_is_retried_not_dead_lettered(
    seed_model: TrainedModel, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.db'}")
    handler = classify_demands(engine, seed_model)
    try:
        with pytest.raises(RetryableError) as raised:
            await handler([_inbound(demand_received())])
    finally:
        await engine.dispose()
    assert isinstance(raised.value.__cause__, OperationalError)


async def test_a_batch_holds_back_only_later_records_that_may_see_what_it_changed(
    seed_model: TrainedModel, sqlite_url: str
) -> None:
    """While a batch commits, another partition's records are handled only if they cannot
    read or change a context it changed (shared/kafka/consumer.py, BatchResult)."""
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)
    handler = classify_demands(engine, seed_model)
    try:
        changed_a = await handler([_inbound(demand_received(customer_ref="A"))])
        # A label of a demand nobody holds changes no context.
        changed_nothing = await handler([_inbound(demand_labelled(), topic="labels")])
    finally:
        await engine.dispose()

    waits = changed_a.must_precede
    assert not waits([_inbound(demand_received(customer_ref="B"))])
    assert not waits([_inbound(case_event(customer_ref="B"))])
    assert waits(
        [_inbound(demand_received(customer_ref="B")), _inbound(demand_received(customer_ref="A"))]
    )
    assert waits([_inbound(case_event(customer_ref="A"))])
    # A label read by its demand is looked up in every context held: it always waits.
    assert waits([_inbound(demand_labelled(), topic="labels")])
    # A forwarded label is keyed by its customer.
    assert waits([_inbound(demand_labelled(), topic="forwarded", key=b"A")])
    assert not waits([_inbound(demand_labelled(), topic="forwarded", key=b"B")])
    assert not changed_nothing.must_precede([_inbound(demand_labelled(), topic="labels")])


async def test_the_metrics_count_every_batchs_classifications_by_their_labels(
    seed_model: TrainedModel, sqlite_url: str
) -> None:
    # The handler keeps each labelled child it counted with: batches after the first must
    # still count under their own labels, and a count of 0 leaves its series as it was.
    await asyncio.to_thread(upgrade, sqlite_url)
    engine = create_engine(sqlite_url)
    registry = CollectorRegistry()
    handler = classify_demands(engine, seed_model, registry)
    texts = [
        "my bill is wrong again",
        "I want to pay by direct debit",
        "where is my engineer",
        "I am moving home next week",
        "asdf qwerty",
    ]
    by_labels: Counter[tuple[str, str, str]] = Counter()
    review: Counter[str] = Counter()
    try:
        # The first batch's one demand leaves a review series at 0: it must be there at 0.
        batches = [texts[-1:], *(texts[first:] for first in range(len(texts)))]
        for batch in batches:
            result = await handler([_inbound(demand_received(text=t)) for t in batch])
            assert result.after_commit is not None
            result.after_commit()
            for record in result.outbound:
                if record.topic == TOPICS.classified:
                    c = decode(DemandClassified, record.value)
                    by_labels[c.demand_type.value, c.purpose, c.method.value] += 1
                    review[str(c.needs_review).lower()] += 1

            for (demand_type, purpose, method), count in by_labels.items():
                labels = {"demand_type": demand_type, "purpose": purpose, "method": method}
                assert (
                    registry.get_sample_value(
                        "demandscope_classifier_classifications_total", labels
                    )
                    == count
                )
            for needs_review in ("true", "false"):
                assert (
                    registry.get_sample_value(
                        "demandscope_classifier_review_total", {"needs_review": needs_review}
                    )
                    == review[needs_review]
                )
            total = sum(by_labels.values())
            for histogram in ("confidence", "delay_seconds"):
                name = f"demandscope_classifier_{histogram}_count"
                assert registry.get_sample_value(name) == total
    finally:
        await engine.dispose()
    assert len(by_labels) > 1
    assert review["true"]
    assert review["false"]
