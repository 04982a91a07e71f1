"""What the Kafka entrypoint does when the label store fails: an outage (or a store not yet
migrated) is retried, never dead-lettered; values the database refuses are a record's fault."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.classifier.context import ContextStore
from services.classifier.db.migrate import upgrade
from services.classifier.db.repository import LabelRepository
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.live_model import in_use
from services.classifier.metrics import ClassifierMetrics
from services.classifier.service import _VALIDATE_CLASSIFIED
from services.classifier.training import TrainedModel
from shared.database.engine import create_engine
from shared.events import CausedBy, ClassificationMethod, DemandClassified, DemandType
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


def _classified_fields(**changes: Any) -> dict[str, Any]:
    """The keywords the handler passes its validator, every field given (as it does)."""
    fields: dict[str, Any] = {
        "demand": demand_received(id="d-1", customer_ref="C-1"),
        "demand_type": DemandType.FAILURE,
        "failure_kind": "progress_chasing",
        "purpose": "billing",
        "confidence": 0.75,
        "method": ClassificationMethod.MODEL,
        "model_version": "seed",
        "needs_review": False,
        "caused_by": CausedBy(kind="demand", ref="d-0", source="web"),
        "classified_at": datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
    }
    return fields | changes


def test_the_handlers_validator_makes_what_the_constructor_makes() -> None:
    # The service builds DemandClassified through its validator (_VALIDATE_CLASSIFIED), not
    # DemandClassified(...): the same event, fields set and bytes, and the same errors.
    # (bound methods are equal when bound to the same object)
    assert DemandClassified.__pydantic_validator__.validate_python == _VALIDATE_CLASSIFIED, (
        "DemandClassified was rebuilt (model_rebuild) after service.py bound its validator "
        "at import: _VALIDATE_CLASSIFIED is the old one; build the event with "
        "DemandClassified(...) there, or bind the validator after the rebuild"
    )
    for fields in (
        _classified_fields(),
        _classified_fields(failure_kind=None, caused_by=None, demand_type=DemandType.VALUE),
        _classified_fields(confidence=1, method="rule", demand_type="unknown"),  # coerced
    ):
        made = DemandClassified(**fields)
        validated = _VALIDATE_CLASSIFIED(dict(fields))
        assert type(validated) is DemandClassified
        assert validated == made
        assert validated.model_fields_set == made.model_fields_set
        assert validated.model_dump_json() == made.model_dump_json()
        assert DemandClassified.__pydantic_serializer__.to_json(
            validated
        ) == DemandClassified.__pydantic_serializer__.to_json(made)
    for bad in (
        _classified_fields(confidence=1.5),
        _classified_fields(confidence="high"),
        _classified_fields(purpose="Not A Slug!"),
        _classified_fields(unexpected=1),
        {k: v for k, v in _classified_fields().items() if k != "classified_at"},
    ):
        with pytest.raises(ValidationError) as by_constructor:
            DemandClassified(**bad)
        with pytest.raises(ValidationError) as by_validator:
            _VALIDATE_CLASSIFIED(dict(bad))
        assert by_validator.value.errors() == by_constructor.value.errors()
        assert str(by_validator.value) == str(by_constructor.value)


def test_the_validator_calls_a_custom_init_as_the_constructor_does() -> None:
    # Why the shortcut is safe even for a model with its own __init__: pydantic's validator
    # calls it (once), as the constructor does. A pydantic that stopped would fail here.
    calls: list[list[str]] = []

    class WithInit(DemandClassified):
        def __init__(self, **data: Any) -> None:
            calls.append(sorted(data))
            super().__init__(**data)

    fields = _classified_fields()
    made = WithInit(**fields)
    validated = WithInit.__pydantic_validator__.validate_python(dict(fields))
    assert calls == [sorted(fields)] * 2
    assert type(validated) is WithInit
    assert validated == made
    assert validated.model_fields_set == made.model_fields_set
