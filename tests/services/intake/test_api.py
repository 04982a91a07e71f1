"""Intake's HTTP API against the real broker: every endpoint, every error, every scope."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from services.intake.config import IntakeSettings
from services.intake.ledger import Claim, IdempotencyLedger
from services.intake.main import create_app
from shared.auth.keys import Scope
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.apps import running
from tests.support.factories import case_event_body, cloudevent_body, demand_body, label_body
from tests.support.kafka_io import read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CARD = "4111 1111 1111 1111"
SENSITIVE = f"My card {CARD} was charged twice, call me on +44 7700 900123"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def records(settings: KafkaSettings, topic: Topic, count: int) -> list[Any]:
    return await read_records(settings, topic_name(settings, topic), count=count, timeout=20)


async def test_a_demand_is_published_redacted_once_and_its_repeat_is_a_duplicate(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    first = await intake.post("/v1/demands", json=demand_body(id="d-1", text=SENSITIVE))
    assert first.status_code == 202, first.text
    assert first.json() == {"id": "d-1", "status": "accepted"}
    again = await intake.post("/v1/demands", json=demand_body(id="d-1", text=SENSITIVE))
    assert again.status_code == 200
    assert again.json() == {"id": "d-1", "status": "duplicate"}
    await intake.post("/v1/demands", json=demand_body(id="d-2", text=SENSITIVE))

    published = await records(kafka_settings, Topic.DEMAND_RECEIVED, 2)
    values = [json.loads(record.value) for record in published]
    assert sorted(value["id"] for value in values) == ["d-1", "d-2"]  # d-1 once
    assert values[0]["text"] == "My card [card] was charged twice, call me on [phone]"
    assert values[0]["redactions"] == ["card", "phone"]
    assert CARD.encode() not in b"".join(record.value for record in published)
    metrics = (await intake.get("/metrics")).text
    assert 'demandscope_intake_redactions_total{kind="card"} 2.0' in metrics
    assert (
        'demandscope_intake_events_duplicate_total{channel="phone",kind="demand",source="demo"} 1.0'
        in metrics
    )


async def test_a_duplicate_is_recognised_across_a_restart_of_intake(
    intake_settings: IntakeSettings, demo_key: str, kafka_settings: KafkaSettings
) -> None:
    headers = {"X-API-Key": demo_key}
    for expected in (202, 200):
        async with running(create_app(intake_settings)) as client:
            await wait_until(partial(_ready, client), what="intake ready")
            response = await client.post("/v1/demands", json=demand_body(id="r-1"), headers=headers)
            assert response.status_code == expected, response.text
    assert len(await records(kafka_settings, Topic.DEMAND_RECEIVED, 1)) == 1


async def test_a_batch_answers_each_item_and_one_bad_item_does_not_sink_it(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    await intake.post("/v1/demands", json=demand_body(id="b-0"))
    items = [
        demand_body(id="b-0"),  # already accepted
        demand_body(id="b-1"),
        demand_body(id="b-2", text="   "),
        demand_body(id="b-3", occurred_at="2026-11-20T09:14:00"),
        demand_body(id="b-1"),  # repeated inside the batch
        demand_body(id="b-4", channel="pigeon"),
    ]
    response = await intake.post("/v1/demands:batch", json=items)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [item["status"] for item in result["results"]] == [
        "duplicate",
        "accepted",
        "rejected",
        "rejected",
        "duplicate",
        "rejected",
    ]
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (1, 2, 3)
    assert result["results"][2]["errors"] == [{"field": "text", "reason": "is blank"}]
    assert result["results"][3]["errors"][0]["field"] == "occurred_at"
    assert "timezone" in result["results"][3]["errors"][0]["reason"]
    assert result["results"][5]["errors"][0]["field"] == "channel"
    published = await records(kafka_settings, Topic.DEMAND_RECEIVED, 2)
    assert sorted(json.loads(r.value)["id"] for r in published) == ["b-0", "b-1"]
    # Counted per batch as answered: the single b-0 and the batch's six items.
    exposition = (await intake.get("/metrics")).text
    phone = 'channel="phone",kind="demand",source="demo"'
    for counted in (
        'demandscope_intake_events_received_total{kind="demand",source="demo"} 7.0',
        f"demandscope_intake_events_accepted_total{{{phone}}} 2.0",
        f"demandscope_intake_events_duplicate_total{{{phone}}} 1.0",
        'demandscope_intake_events_rejected_total{kind="demand",reason="invalid",'
        'source="demo"} 3.0',
    ):
        assert counted in exposition


async def test_a_batch_item_another_request_is_publishing_is_rejected_for_a_retry(
    intake: httpx.AsyncClient, intake_settings: IntakeSettings
) -> None:
    # Another instance has claimed f-1 and not yet confirmed it: answering it "duplicate"
    # (the all-admitted batch's short way) would tell the sender it is stored when it may not be.
    engine = create_engine(intake_settings.database_url)
    other = IdempotencyLedger(engine, lease=timedelta(seconds=60))
    writer = asyncio.create_task(other.run())
    await asyncio.sleep(0)  # the writer starts
    try:
        assert await other.claim([("demand", "demo", "f-1")]) == [Claim.CLAIMED]

        response = await intake.post(
            "/v1/demands:batch", json=[demand_body(id="f-0"), demand_body(id="f-1")]
        )
    finally:
        other.request_stop()
        await writer
        await engine.dispose()

    assert response.status_code == 200, response.text
    result = response.json()
    assert [item["status"] for item in result["results"]] == ["accepted", "rejected"]
    assert result["results"][1]["errors"] == [
        {"field": "id", "reason": "being published by another request; retry"}
    ]
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (1, 0, 1)


async def test_a_batch_over_the_item_limit_is_refused_whole(
    intake_settings: IntakeSettings, demo_key: str
) -> None:
    settings = intake_settings.model_copy(update={"max_batch_items": 2})
    async with running(create_app(settings)) as client:
        items = [demand_body(id=f"m-{n}", text="hi") for n in range(3)]
        response = await client.post(
            "/v1/demands:batch", json=items, headers={"X-API-Key": demo_key}
        )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body", "reason": "3 items; at most 2"}]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"occurred_at": "2026-11-20T09:14:00"}, "occurred_at", "timezone"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at", "in the future"),
        ({"text": ""}, "text", "at least 1 character"),
        ({"text": " \n "}, "text", "is blank"),
        ({"text": "x" * 10_001}, "text", "at most 10000 characters"),
        ({"channel": "fax"}, "channel", "Input should be"),
        ({"attributes": {"a": 5}}, "attributes.a", "valid string"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
async def test_invalid_demands_get_a_422_naming_the_field_and_reach_nothing(
    intake: httpx.AsyncClient,
    kafka_settings: KafkaSettings,
    changes: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    response = await intake.post("/v1/demands", json=demand_body(id="bad", **changes))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert [error["field"] for error in errors] == [field]
    assert reason in errors[0]["reason"]
    await intake.post("/v1/demands", json=demand_body(id="good"))
    published = await records(kafka_settings, Topic.DEMAND_RECEIVED, 1)
    assert [json.loads(r.value)["id"] for r in published] == ["good"]


async def test_bodies_over_the_limit_get_413_and_unknown_media_types_415(
    intake: httpx.AsyncClient,
) -> None:
    huge = json.dumps([demand_body(id=f"h-{n}") for n in range(400)])
    too_large = await intake.post(
        "/v1/demands:batch", content=huge, headers={"Content-Type": "application/json"}
    )
    assert too_large.status_code == 413
    assert too_large.json()["title"] == "Content too large"
    assert "limit of" in too_large.json()["detail"]
    unknown = await intake.post(
        "/v1/demands", content=b"id=1", headers={"Content-Type": "text/plain"}
    )
    assert unknown.status_code == 415
    broken = await intake.post(
        "/v1/demands", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["field"] == "body"
    # Each is timed by route template and status (the skeleton's one request middleware).
    exposition = (await intake.get("/metrics")).text
    for route, status in (("/v1/demands:batch", 413), ("/v1/demands", 415), ("/v1/demands", 422)):
        timed = f'demandscope_intake_request_seconds_count{{route="{route}",status="{status}"}} 1.0'
        assert timed in exposition


async def test_keys_are_required_scoped_and_bound_to_their_source(
    intake: httpx.AsyncClient, key_store: ApiKeyStore
) -> None:
    missing = await intake.post(
        "/v1/demands", json=demand_body(id="k-1"), headers={"Authorization": ""}
    )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await intake.post(
        "/v1/demands", json=demand_body(id="k-1"), headers={"Authorization": "Bearer ds_nonsense"}
    )
    assert wrong.status_code == 401

    reader, _ = await key_store.create("demo", [Scope.READ])
    forbidden = await intake.post(
        "/v1/demands", json=demand_body(id="k-1"), headers={"Authorization": f"Bearer {reader}"}
    )
    assert forbidden.status_code == 403
    assert "demands:write" in forbidden.json()["detail"]

    labeller, _ = await key_store.create("demo", [Scope.LABELS_WRITE])
    label = label_body(id="l-0", purpose="billing", labelled_by="s-1")
    assert (
        await intake.post("/v1/demands/d-1/labels", json=label, headers=bearer(labeller))
    ).status_code == 202
    assert (
        await intake.post("/v1/demands", json=demand_body(id="k-2"), headers=bearer(labeller))
    ).status_code == 403

    other, other_record = await key_store.create("genesys", [Scope.DEMANDS_WRITE])
    mismatch = await intake.post("/v1/demands", json=demand_body(id="k-3"), headers=bearer(other))
    assert mismatch.status_code == 403
    assert mismatch.json()["errors"][0]["field"] == "source"
    own = await intake.post(
        "/v1/demands", json=demand_body(id="k-3", source="genesys"), headers=bearer(other)
    )
    assert own.status_code == 202

    assert await key_store.revoke(other_record.key_id)
    revoked = await intake.post(
        "/v1/demands", json=demand_body(id="k-4", source="genesys"), headers=bearer(other)
    )
    assert revoked.status_code == 401


async def test_case_events_and_labels_reach_their_topics(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    # No source: intake takes it from the key.
    case = case_event_body(
        id="c-1", case_ref="CASE-1", customer_ref="C-1", purpose="billing", source=...
    )
    assert (await intake.post("/v1/case-events", json=case)).status_code == 202
    assert (await intake.post("/v1/case-events", json=case)).json()["status"] == "duplicate"
    bad_case = await intake.post("/v1/case-events", json=case | {"id": "c-2", "type": "closed"})
    assert bad_case.status_code == 422
    assert bad_case.json()["errors"][0]["field"] == "type"
    label = label_body(
        id="l-1",
        demand_type="failure",
        failure_kind="progress_chasing",
        purpose="repairs",
        note="customer said email me at jo@example.com",
    )
    response = await intake.post("/v1/demands/d-9/labels", json=label)
    assert response.status_code == 202, response.text

    (case_record,) = await records(kafka_settings, Topic.CASE_EVENTS, 1)
    assert json.loads(case_record.value) | {"occurred_at": None} == case | {
        "occurred_at": None,
        "source": "demo",
        "schema_version": 1,
    }
    (label_record,) = await records(kafka_settings, Topic.DEMAND_LABELS, 1)
    published = json.loads(label_record.value)
    assert published["demand_id"] == "d-9"
    assert published["note"] == "customer said email me at [email]"


async def test_cloudevents_in_structured_binary_and_batch_modes(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    structured = await intake.post(
        "/v1/demands",
        content=json.dumps(cloudevent_body(id="ce-1")),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert structured.status_code == 202, structured.text
    event = cloudevent_body(id="ce-2")
    binary = await intake.post(
        "/v1/demands",
        content=json.dumps(event["data"]),
        headers={
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "ce-2",
            "ce-source": "demo",
            "ce-type": event["type"],
            "ce-time": event["time"],
        },
    )
    assert binary.status_code == 202, binary.text
    wrong_type = cloudevent_body(id="ce-3") | {"type": "org.demandscope.case.event.v1"}
    batch = await intake.post(
        "/v1/demands:batch",
        content=json.dumps(
            [cloudevent_body(id="ce-1"), cloudevent_body(id="ce-4"), wrong_type, {"id": 1}]
        ),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 200, batch.text
    statuses = [item["status"] for item in batch.json()["results"]]
    assert statuses == ["duplicate", "accepted", "rejected", "rejected"]
    assert batch.json()["results"][2]["errors"][0]["field"] == "type"
    published = await records(kafka_settings, Topic.DEMAND_RECEIVED, 3)
    assert sorted(json.loads(r.value)["id"] for r in published) == ["ce-1", "ce-2", "ce-4"]


async def test_openapi_documents_every_endpoint_with_examples(intake: httpx.AsyncClient) -> None:
    document = (await intake.get("/openapi.json")).json()
    paths = document["paths"]
    for path in ("/v1/demands", "/v1/demands:batch", "/v1/case-events"):
        content = paths[path]["post"]["requestBody"]["content"]
        assert "application/json" in content
    assert "DemandSubmission" in document["components"]["schemas"]
    assert set(paths["/v1/demands"]["post"]["responses"]) >= {"202", "401", "403", "413", "415"}


async def test_far_future_window_is_the_configured_skew(intake: httpx.AsyncClient) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    assert (
        await intake.post("/v1/demands", json=demand_body(id="f-1", occurred_at=soon))
    ).status_code == 202


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
