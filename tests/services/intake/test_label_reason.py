"""A label says why it was made: intake passes ``reason`` on, a label without one is a
correction (as every label made before the field existed), and an unknown reason is a 422."""

from __future__ import annotations

import json

import httpx
import pytest

from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import label_body
from tests.support.kafka_io import read_records

pytestmark = pytest.mark.integration


async def test_the_reason_reaches_the_topic_and_defaults_to_correction(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    audit = await intake.post("/v1/demands/d-1/labels", json=label_body(id="l-1", reason="audit"))
    assert audit.status_code == 202, audit.text
    plain = await intake.post("/v1/demands/d-2/labels", json=label_body(id="l-2"))
    assert plain.status_code == 202, plain.text
    unknown = await intake.post(
        "/v1/demands/d-3/labels", json=label_body(id="l-3", reason="because")
    )
    assert unknown.status_code == 422
    assert [problem["field"] for problem in unknown.json()["errors"]] == ["reason"]

    records = await read_records(
        kafka_settings, topic_name(kafka_settings, Topic.DEMAND_LABELS), count=2
    )
    reasons = {json.loads(r.value)["id"]: json.loads(r.value)["reason"] for r in records}
    assert reasons == {"l-1": "audit", "l-2": "correction"}
