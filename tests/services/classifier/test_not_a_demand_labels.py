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
from shared.database.engine import create_engine
from shared.events.classification import DemandType
from tests.support.factories import demand_labelled

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
