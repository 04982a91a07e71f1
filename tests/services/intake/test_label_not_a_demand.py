"""A person's "not a demand" goes through intake's label route: passed on to the topic when
it says no type, refused with a precise reason when it contradicts itself."""

from __future__ import annotations

import json

import httpx
import pytest

from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import label_body
from tests.support.kafka_io import read_records

pytestmark = pytest.mark.integration


async def test_not_a_demand_reaches_the_topic_and_a_contradiction_is_a_422(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    chatter = label_body(id="nd-1", demand_type="unknown", not_a_demand=True, reason="audit")
    answer = await intake.post("/v1/demands/d-1/labels", json=chatter)
    assert answer.status_code == 202, answer.text

    typed = label_body(
        id="nd-2", demand_type="failure", failure_kind="progress_chasing", not_a_demand=True
    )
    refused = await intake.post("/v1/demands/d-2/labels", json=typed)
    assert refused.status_code == 422, refused.text
    assert sorted(problem["field"] for problem in refused.json()["errors"]) == [
        "demand_type",
        "failure_kind",
    ]

    records = await read_records(
        kafka_settings, topic_name(kafka_settings, Topic.DEMAND_LABELS), count=1
    )
    published = json.loads(records[0].value)
    assert (published["id"], published["not_a_demand"], published["demand_type"]) == (
        "nd-1",
        True,
        "unknown",
    )
