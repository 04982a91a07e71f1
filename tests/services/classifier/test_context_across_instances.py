"""A label is keyed by its demand, a customer's context by the customer: the instance that
reads a label may not hold the context. It forwards the label, keyed by the customer, in its
batch's transaction, and the instance that holds the context applies it (issue 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.classifier.context import ContextStore
from services.classifier.db.repository import LabelRepository
from services.classifier.handler import ClassifyDemands, Topics
from services.classifier.judgement import Thresholds
from services.classifier.live_model import in_use
from services.classifier.metrics import ClassifierMetrics
from services.classifier.training import TrainedModel
from shared.database.engine import create_engine
from shared.events import DemandClassified, DemandLabelled
from shared.kafka.codec import OutboundRecord, decode
from shared.kafka.consumer import BatchResult, Inbound
from tests.support.factories import demand_labelled, demand_received

TOPICS = Topics(classified="classified", context="context", forwarded_labels="forwarded")


@pytest.fixture
async def labels(labels_url: str) -> AsyncIterator[LabelRepository]:
    engine = create_engine(labels_url)  # one database for the fleet, as in production
    try:
        yield LabelRepository(engine)
    finally:
        await engine.dispose()


def instance(labels: LabelRepository, seed_model: TrainedModel) -> ClassifyDemands:
    return ClassifyDemands(
        topics=TOPICS,
        source="test",
        model=lambda: in_use("seed", seed_model.model),
        context=ContextStore(window=timedelta(days=30)),
        labels=labels,
        thresholds=Thresholds(),
        metrics=ClassifierMetrics(CollectorRegistry()),
    )


def inbound(topic: str, partition: int, key: str, event: Any) -> Inbound[Any]:
    return Inbound(
        topic=topic,
        partition=partition,
        offset=0,
        key=key.encode(),
        event=event,
        headers=[],
        timestamp_ms=0,
    )


async def committed(handler: ClassifyDemands, messages: list[Inbound[Any]]) -> BatchResult:
    result = await handler(messages)
    assert not result.rejected
    if result.after_commit is not None:
        result.after_commit()  # as the runner does once Kafka committed the transaction
    return result


def on(result: BatchResult, topic: str) -> list[OutboundRecord]:
    return [r for r in result.outbound if r.topic == topic]


async def test_a_label_read_by_another_instance_reaches_the_customers_context(
    labels: LabelRepository, seed_model: TrainedModel
) -> None:
    owner, reader = instance(labels, seed_model), instance(labels, seed_model)
    demand = demand_received()
    first = await committed(owner, [inbound("demands", 1, demand.customer_ref, demand)])
    [record] = on(first, "classified")
    purpose = decode(DemandClassified, record.value).purpose
    corrected = "moving-home" if purpose != "moving-home" else "billing"
    label = demand_labelled(demand_id=demand.id, purpose=corrected)

    # The label's partition went to the other instance, which holds no context of the customer.
    read = await committed(reader, [inbound("labels", 0, label.demand_id, label)])
    assert not on(read, "context")
    [forward] = on(read, "forwarded")
    assert forward.key == demand.customer_ref.encode()  # the owner's partition, as demands'
    assert decode(DemandLabelled, forward.value) == label
    assert await labels.count() == 1  # kept once, by the instance that read it

    applied = await committed(
        owner, [inbound("forwarded", 1, demand.customer_ref, decode(DemandLabelled, forward.value))]
    )
    state = owner_state(owner, demand.customer_ref)
    assert state.demand(demand.id, "test") is not None
    assert state.demand(demand.id, "test").purpose == corrected
    assert [r.key for r in on(applied, "context")] == [demand.customer_ref.encode()]
    assert not on(applied, "forwarded")  # applied where it arrived, never bounced on
    assert await labels.count() == 1  # a forwarded label is not stored a second time


async def test_a_label_whose_context_is_held_here_is_applied_without_forwarding(
    labels: LabelRepository, seed_model: TrainedModel
) -> None:
    owner = instance(labels, seed_model)
    demand = demand_received()
    await committed(owner, [inbound("demands", 0, demand.customer_ref, demand)])
    label = demand_labelled(demand_id=demand.id, purpose="moving-home")
    result = await committed(owner, [inbound("labels", 0, label.demand_id, label)])
    assert not on(result, "forwarded")


async def test_a_label_of_a_demand_no_instance_saw_is_kept_but_not_forwarded(
    labels: LabelRepository, seed_model: TrainedModel
) -> None:
    reader = instance(labels, seed_model)
    label = demand_labelled(purpose="moving-home")
    result = await committed(reader, [inbound("labels", 0, label.demand_id, label)])
    assert not on(result, "forwarded")
    assert await labels.count() == 1


def owner_state(handler: ClassifyDemands, customer: str) -> Any:
    state = handler._context.get(customer)
    assert state is not None, "the owner holds the customer's context"
    return state


async def test_a_label_read_before_its_demand_is_classified_reaches_the_context(
    labels: LabelRepository, seed_model: TrainedModel
) -> None:
    """The label's partition ran ahead of the demand's: the instance that classifies the
    demand later finds the label in the shared store and its customer's context takes it."""
    owner, reader = instance(labels, seed_model), instance(labels, seed_model)
    demand = demand_received()
    label = demand_labelled(demand_id=demand.id, purpose="moving-home")
    read = await committed(reader, [inbound("labels", 0, label.demand_id, label)])
    assert not on(read, "forwarded")  # no instance has seen the demand: nowhere to send it

    await committed(owner, [inbound("demands", 1, demand.customer_ref, demand)])
    state = owner_state(owner, demand.customer_ref)
    assert [d.purpose for d in state.demands] == ["moving-home"]


async def test_a_label_read_before_its_demand_in_one_batch_reaches_the_context(
    labels: LabelRepository, seed_model: TrainedModel
) -> None:
    owner = instance(labels, seed_model)
    demand = demand_received()
    label = demand_labelled(demand_id=demand.id, purpose="moving-home")
    result = await committed(
        owner,
        [
            inbound("labels", 0, label.demand_id, label),
            inbound("demands", 0, demand.customer_ref, demand),
        ],
    )
    assert not on(result, "forwarded")
    state = owner_state(owner, demand.customer_ref)
    assert [d.purpose for d in state.demands] == ["moving-home"]
