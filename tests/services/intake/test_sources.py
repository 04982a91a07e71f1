"""Sources are not tenants of one another's data (issue 10, item 12): an event is (source, id),
and a source's key labels only its own demands. Against the real broker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared.auth.keys import Scope
from shared.auth.store import ApiKeyStore
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import case_event_body, demand_body, label_body
from tests.support.kafka_io import read_records

pytestmark = pytest.mark.integration


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def records(settings: KafkaSettings, topic: Topic, count: int) -> list[Any]:
    return await read_records(settings, topic_name(settings, topic), count=count, timeout=20)


async def test_another_source_may_use_an_id_and_a_repeat_within_a_source_is_a_duplicate(
    intake: httpx.AsyncClient, key_store: ApiKeyStore, kafka_settings: KafkaSettings
) -> None:
    genesys, _ = await key_store.create("genesys", [Scope.DEMANDS_WRITE])
    assert (await intake.post("/v1/demands", json=demand_body(id="shared-1"))).status_code == 202
    # Before: 200 "duplicate", the demand dropped, and the answer told genesys demo's id exists.
    theirs = await intake.post(
        "/v1/demands", json=demand_body(id="shared-1", source="genesys"), headers=bearer(genesys)
    )
    assert theirs.status_code == 202, theirs.text
    assert theirs.json() == {"id": "shared-1", "status": "accepted"}
    again = await intake.post(
        "/v1/demands", json=demand_body(id="shared-1", source="genesys"), headers=bearer(genesys)
    )
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    batch = await intake.post(
        "/v1/demands:batch",
        json=[demand_body(id="shared-1", source="genesys"), demand_body(id="shared-2")],
        headers=bearer(genesys),
    )
    assert [r["status"] for r in batch.json()["results"]] == ["duplicate", "rejected"]

    case = case_event_body(id="case-shared", source=...)
    assert (await intake.post("/v1/case-events", json=case)).status_code == 202
    genesys_case = await intake.post("/v1/case-events", json=case, headers=bearer(genesys))
    assert genesys_case.status_code == 202

    published = [
        json.loads(r.value) for r in await records(kafka_settings, Topic.DEMAND_RECEIVED, 2)
    ]
    assert sorted((d["source"], d["id"]) for d in published) == [
        ("demo", "shared-1"),
        ("genesys", "shared-1"),
    ]


async def test_a_sources_key_labels_only_its_own_demands_and_learns_nothing_of_others(
    intake: httpx.AsyncClient, key_store: ApiKeyStore, kafka_settings: KafkaSettings
) -> None:
    assert (await intake.post("/v1/demands", json=demand_body(id="demo-only"))).status_code == 202
    genesys, _ = await key_store.create("genesys", [Scope.LABELS_WRITE])

    def relabel(demand_id: str, label_id: str, **fields: Any) -> Any:
        body = label_body(id=label_id, demand_type="failure", purpose="billing", **fields)
        return intake.post(f"/v1/demands/{demand_id}/labels", json=body, headers=bearer(genesys))

    # Naming demo's demand is refused, and exactly as for an id demo never used.
    existing = await relabel("demo-only", "g-1", demand_source="demo")
    unknown = await relabel("never-posted", "g-2", demand_source="demo")
    assert existing.status_code == unknown.status_code == 403
    assert _answer(existing) == _answer(unknown)
    assert existing.json()["errors"][0]["field"] == "demand_source"

    # Left out, the label is for genesys's own demand of that id, wherever else it exists.
    own = await relabel("demo-only", "g-3")
    own_unknown = await relabel("never-posted", "g-4")
    assert own.status_code == own_unknown.status_code == 202
    (first, second) = [
        json.loads(r.value) for r in await records(kafka_settings, Topic.DEMAND_LABELS, 2)
    ]
    assert (first["demand_id"], first["demand_source"]) == ("demo-only", "genesys")
    assert (second["demand_id"], second["demand_source"]) == ("never-posted", "genesys")


async def test_an_organisation_wide_key_names_the_demands_source(
    intake: httpx.AsyncClient, key_store: ApiKeyStore, kafka_settings: KafkaSettings
) -> None:
    ops, _ = await key_store.create("ops", [Scope.LABELS_WRITE, Scope.SOURCES_ALL])
    missing = await intake.post(
        "/v1/demands/d-1/labels", json=label_body(id="o-1"), headers=bearer(ops)
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "demand_source"
    named = await intake.post(
        "/v1/demands/d-1/labels",
        json=label_body(id="o-1", demand_source="demo"),
        headers=bearer(ops),
    )
    assert named.status_code == 202, named.text
    (label,) = [json.loads(r.value) for r in await records(kafka_settings, Topic.DEMAND_LABELS, 1)]
    assert (label["demand_id"], label["demand_source"]) == ("d-1", "demo")
    # sources:all reaches labels and reads, not other sources' demands.
    ops_demands, _ = await key_store.create("ops", [Scope.DEMANDS_WRITE, Scope.SOURCES_ALL])
    posted = await intake.post("/v1/demands", json=demand_body(), headers=bearer(ops_demands))
    assert posted.status_code == 403


def _answer(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return {key: value for key, value in body.items() if key != "instance"}
