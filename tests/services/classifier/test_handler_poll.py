"""A poll's batches prepared together (``ClassifyDemands.for_poll``): one prediction and one
trip to the label store for all of them, and each batch then judged, changed and committed
as it would have been on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.classifier.context import ContextStore
from services.classifier.db.migrate import upgrade
from services.classifier.db.repository import LabelRepository
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.live_model import in_use
from services.classifier.metrics import ClassifierMetrics
from services.classifier.model.text_model import Prediction, TextModel
from services.classifier.training import TrainedModel
from shared.database.engine import create_engine
from shared.kafka.consumer import BatchResult, Inbound, RetryableError
from tests.support.factories import case_event, demand_labelled, demand_received

TOPICS = Topics(classified="classified", context="context", forwarded_labels="forwarded")


class CountingModel:
    """The seed model, counting its batch predictions."""

    def __init__(self, model: TextModel) -> None:
        self._model = model
        self.batches: list[int] = []

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        self.batches.append(len(texts))
        return self._model.predict_batch(list(texts))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def handler_on(engine: AsyncEngine, model: CountingModel) -> ClassifyDemands:
    return ClassifyDemands(
        topics=TOPICS,
        source="test",
        model=lambda: in_use("seed", model),  # type: ignore[arg-type]
        context=ContextStore(window=timedelta(days=30)),
        labels=LabelRepository(engine),
        thresholds=Thresholds(),
        metrics=ClassifierMetrics(CollectorRegistry()),
    )


def _inbound(event: Any, partition: int, offset: int, topic: str = "demands") -> Inbound[Any]:
    key = getattr(event, "customer_ref", None)
    return Inbound(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode() if key else None,
        event=event,
        headers=[],
        timestamp_ms=offset,
    )


def poll_events() -> list[list[tuple[Any, str]]]:
    """Two tasks' events: demands of their own customers, a case event, and a label read
    before its demand in the same batch."""
    texts = ["my bill is wrong again", "I want to pay by direct debit", "where is my engineer"]
    tasks: list[list[tuple[Any, str]]] = []
    for partition, customers in enumerate((["A", "B"], ["C", "D"])):
        demands = [
            demand_received(id=f"d-{partition}-{n}", customer_ref=customer, text=text)
            for n, (customer, text) in enumerate((c, t) for c in customers for t in texts)
        ]
        events: list[tuple[Any, str]] = [
            (demand_labelled(demand_id=demands[0].id, purpose="billing"), "labels")
        ]
        events += [(d, "demands") for d in demands]
        events.append((case_event(customer_ref=customers[0]), "cases"))
        tasks.append(events)
    return tasks


def poll(tasks: list[list[tuple[Any, str]]]) -> list[list[Inbound[Any]]]:
    """The tasks' records, as a poll hands them over."""
    return [
        [_inbound(e, partition, offset, topic) for offset, (e, topic) in enumerate(events)]
        for partition, events in enumerate(tasks)
    ]


def outcome(result: BatchResult) -> list[tuple[str, bytes | None, Any]]:
    """The batch's records without the times of classification and encoding."""
    kept = []
    for record in result.outbound:
        value = json.loads(record.value or b"{}")
        if record.topic == TOPICS.classified:
            value.pop("classified_at", None)
            value.pop("id", None)
        elif record.topic == TOPICS.context:
            for entry in value.get("demands", []):
                entry.pop("updated_at", None)
            value.pop("updated_at", None)
        kept.append((record.topic, record.key, value))
    return kept


async def test_a_polls_batches_share_one_prediction_and_are_judged_as_alone(
    seed_model: TrainedModel, tmp_path: Path
) -> None:
    results: dict[str, list[BatchResult]] = {}
    models: dict[str, CountingModel] = {}
    events = poll_events()
    for way in ("alone", "prepared"):
        url = f"sqlite+aiosqlite:///{tmp_path / f'{way}.db'}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        models[way] = CountingModel(seed_model.model)
        handler = handler_on(engine, models[way])
        batches = poll(events)
        try:
            if way == "prepared":
                each = await handler.for_poll([m for batch in batches for m in batch])
            else:
                each = handler
            results[way] = []
            for batch in batches:
                result = await each(batch)
                assert result.after_commit is not None
                result.after_commit()  # committed: the next batch sees its context
                results[way].append(result)
        finally:
            await engine.dispose()

    assert models["alone"].batches == [6, 6]
    assert models["prepared"].batches == [12]  # once for the poll
    for alone, prepared in zip(results["alone"], results["prepared"], strict=True):
        assert outcome(prepared) == outcome(alone)
        assert not prepared.rejected
        assert not alone.rejected
    # The person's label, read before its demand, is in the demand's context either way.
    context = [v for t, _, v in outcome(results["prepared"][0]) if t == TOPICS.context]
    assert any(d.get("purpose") == "billing" for state in context for d in state["demands"])


async def test_a_poll_whose_label_store_trip_fails_leaves_each_batch_to_retry(
    seed_model: TrainedModel, tmp_path: Path
) -> None:
    """The store not migrated: the poll is not prepared, and each batch's own trip raises the
    error the runner retries."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.db'}")
    model = CountingModel(seed_model.model)
    handler = handler_on(engine, model)
    batches = poll(poll_events())
    try:
        each = await handler.for_poll([m for batch in batches for m in batch])
        assert each is handler
        for batch in batches:
            try:
                await each(batch)
            except RetryableError:
                continue
            raise AssertionError("a batch was handled without its label store")
    finally:
        await engine.dispose()


async def test_a_batch_that_was_not_in_the_poll_is_handled_on_its_own(
    seed_model: TrainedModel, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    model = CountingModel(seed_model.model)
    handler = handler_on(engine, model)
    first, second = poll(poll_events())
    try:
        each = await handler.for_poll(first)
        result = await each(second)
    finally:
        await engine.dispose()
    assert model.batches == [6, 6]  # the poll's, then the stranger's own
    assert sum(r.topic == TOPICS.classified for r in result.outbound) == 6
