"""A "not a demand" label on both databases: it teaches neither the type nor the purpose,
is counted, and the customer's context keeps the purpose it had."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.classifier.db.migrate import upgrade
from services.classifier.db.repository import LabelRepository, SeenText
from services.classifier.training import TrainedModel
from shared.database.engine import create_engine
from shared.events import DemandClassified
from shared.events.classification import DemandType
from shared.kafka.codec import decode
from tests.support.factories import demand_labelled, demand_received

from .test_context_across_instances import committed, inbound, instance, on, owner_state

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
label = partial(demand_labelled, labelled_at=T0)
chatter = partial(
    label, not_a_demand=True, demand_type=DemandType.UNKNOWN, failure_kind=None, reason="audit"
)


@pytest.fixture
async def labels(database_url: str) -> AsyncIterator[LabelRepository]:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        yield LabelRepository(engine)
    finally:
        await engine.dispose()


async def test_a_not_a_demand_label_teaches_nothing_and_is_counted(
    labels: LabelRepository,
) -> None:
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", purpose="billing", text="my bill is wrong"),
            chatter(id="L2", demand_id="D2", purpose="billing", text="love you guys lol"),
            # D3: a person first said billing, then "not a demand": the latest wins.
            label(id="L3", demand_id="D3", purpose="billing", text="great stuff"),
            chatter(
                id="L4",
                demand_id="D3",
                purpose="billing",
                text="great stuff",
                labelled_at=T0 + timedelta(hours=1),
            ),
        ]
    )
    examples = await labels.training_examples()
    assert [(e.text, e.purpose, e.demand_type) for e in examples] == [
        ("my bill is wrong", "billing", "value")
    ]
    assert await labels.not_a_demand_count() == 2
    assert await labels.count() == 4  # every label is kept


async def test_the_context_keeps_its_purpose_after_a_not_a_demand_label(
    labels: LabelRepository,
) -> None:
    await labels.add_labels([chatter(id="L1", demand_id="D1", purpose="moving home")])
    assert await labels.labelled_purposes([("test", "D1")]) == {}
    found = await labels.keep_batch(
        texts=[SeenText("test", "D1", "lol", T0, "C1")], labels=[], look_up=[("test", "D1")]
    )
    assert found == {}


async def test_a_not_a_demand_label_leaves_the_customers_context_and_is_not_forwarded(
    labels_url: str, seed_model: TrainedModel
) -> None:
    engine = create_engine(labels_url)
    try:
        store = LabelRepository(engine)
        owner, reader = instance(store, seed_model), instance(store, seed_model)
        demand = demand_received()
        first = await committed(owner, [inbound("demands", 0, demand.customer_ref, demand)])
        [record] = on(first, "classified")
        purpose = decode(DemandClassified, record.value).purpose
        other = "moving-home" if purpose != "moving-home" else "billing"
        label = chatter(id="L1", demand_id=demand.id, purpose=other)

        here = await committed(owner, [inbound("labels", 0, label.demand_id, label)])
        assert not on(here, "context")  # nothing changed in the context
        elsewhere = await committed(reader, [inbound("labels", 0, label.demand_id, label)])
        assert not on(elsewhere, "forwarded")  # no purpose to bring to the owner
        assert owner_state(owner, demand.customer_ref).demand(demand.id, "test").purpose == (
            purpose
        )
        assert await store.count() == 1  # kept (once), teaching nothing
        assert await store.training_examples() == []
    finally:
        await engine.dispose()
