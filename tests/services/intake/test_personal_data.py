"""Personal data in every field (issue 10, item 11): free text masked, identifiers refused.

Each case plants a card number, an e-mail address and a phone number, and checks both what
intake answers (a 422 names the field and the kind, never the value) and what it publishes
(masked). No planted value may reach an answer, a record or a log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import case_event_body, cloudevent_body, demand_body, label_body
from tests.support.kafka_io import read_records

pytestmark = pytest.mark.integration

CARD = "4111 1111 1111 1111"
EMAIL = "jo.bloggs@example.com"
PHONE = "07700 900123"
COMPACT = {"card": "4111111111111111", "email": EMAIL, "phone": "07700900123"}
PLANTED = [CARD, EMAIL, PHONE, *COMPACT.values(), "+447700900123", "jo.bloggs"]
REASONS = {
    "card": "looks like a payment card number; send an opaque reference, not personal data",
    "email": "looks like an e-mail address; send an opaque reference, not personal data",
    "phone": "looks like a phone number; send an opaque reference, not personal data",
}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}
CE_STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def assert_nothing_planted_in(text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    found = [value for value in PLANTED if value.encode() in data]
    assert found == [], f"planted values found: {found}"


@pytest.fixture(autouse=True)
def nothing_planted_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_nothing_planted_in(caplog.text)


async def published(settings: KafkaSettings, topic: Topic, count: int) -> list[dict[str, Any]]:
    records = await read_records(settings, topic_name(settings, topic), count=count, timeout=20)
    for record in records:
        assert_nothing_planted_in(record.value)
        assert_nothing_planted_in(record.key or b"")
        for _name, value in record.headers:
            assert_nothing_planted_in(value)
    return [json.loads(record.value) for record in records]


def refused(response: httpx.Response, *expected: tuple[str, str]) -> None:
    """A 422 naming each field with the kind of data it holds, and nothing planted."""
    assert response.status_code == 422, response.text
    assert_nothing_planted_in(response.text)
    errors = response.json()["errors"]
    assert errors == [{"field": field, "reason": REASONS[kind]} for field, kind in expected]


# -- free text is masked --------------------------------------------------------------------


async def test_every_free_text_field_of_a_demand_is_masked(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    body = demand_body(
        id="pd-1",
        text=f"I paid with {CARD}",
        reason_code=f"call back on {PHONE}",
        team=f"{EMAIL}'s team",
        attributes={
            "contact": f"{EMAIL} or {PHONE}",
            "card": COMPACT["card"],
            f"caller {PHONE}": "rang twice",
            EMAIL: "wrote in",
        },
    )
    response = await intake.post("/v1/demands", json=body)
    assert response.status_code == 202, response.text
    (value,) = await published(kafka_settings, Topic.DEMAND_RECEIVED, 1)
    assert value["text"] == "I paid with [card]"
    assert value["reason_code"] == "call back on [phone]"
    assert value["team"] == "[email]'s team"
    assert value["attributes"] == {
        "contact": "[email] or [phone]",
        "card": "[card]",
        "caller [phone]": "rang twice",
        "[email]": "wrote in",
    }
    assert value["redactions"] == ["card", "email", "phone"]


async def test_a_labels_note_and_text_are_masked(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    body = label_body(id="pl-1", note=f"rang {PHONE}, mailed {EMAIL}", text=f"card {CARD}")
    response = await intake.post("/v1/demands/d-1/labels", json=body)
    assert response.status_code == 202, response.text
    (value,) = await published(kafka_settings, Topic.DEMAND_LABELS, 1)
    assert value["note"] == "rang [phone], mailed [email]"
    assert value["text"] == "card [card]"


async def test_a_masked_value_that_outgrows_its_field_is_a_422_not_a_500(
    intake: httpx.AsyncClient,
) -> None:
    # "AB123456C " is 10 characters, "[ni_number] " 12: 10,000 characters become 12,000.
    too_long = await intake.post("/v1/demands", json=demand_body(text="AB123456C " * 1_000))
    assert too_long.status_code == 422, too_long.text
    assert [error["field"] for error in too_long.json()["errors"]] == ["text"]
    # Two attribute names alike once masked: keeping one would drop the other silently.
    twins = {f"caller {PHONE}": "a", "caller 07700 900124": "b"}
    clash = await intake.post("/v1/demands", json=demand_body(attributes=twins))
    assert clash.status_code == 422, clash.text
    assert_nothing_planted_in(clash.text)
    assert [error["field"] for error in clash.json()["errors"]] == ["attributes"]


# -- identifiers are refused ----------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "customer_ref", "case_ref", "source"])
@pytest.mark.parametrize("kind", ["card", "email", "phone"])
async def test_a_demand_identifier_that_is_personal_data_is_refused(
    intake: httpx.AsyncClient, field: str, kind: str
) -> None:
    response = await intake.post("/v1/demands", json=demand_body(**{field: COMPACT[kind]}))
    refused(response, (field, kind))


async def test_a_prefixed_or_international_identifier_is_refused_too(
    intake: httpx.AsyncClient,
) -> None:
    # "+447700900123" is no Identifier (it starts with "+"): still named as a phone number.
    body = demand_body(customer_ref="+447700900123", case_ref="C-07700900123")
    response = await intake.post("/v1/demands", json=body)
    refused(response, ("customer_ref", "phone"), ("case_ref", "phone"))


async def test_a_refused_identifier_is_named_beside_the_other_faults(
    intake: httpx.AsyncClient,
) -> None:
    response = await intake.post(
        "/v1/demands", json=demand_body(customer_ref=EMAIL, channel="pigeon")
    )
    assert response.status_code == 422
    assert_nothing_planted_in(response.text)
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == ["customer_ref", "channel"]


async def test_a_batch_refuses_each_item_on_its_own_and_never_names_a_personal_id(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    items = [
        demand_body(id="pb-1", team=f"team of {EMAIL}"),
        demand_body(id=COMPACT["phone"]),
        demand_body(id="pb-3", customer_ref=COMPACT["card"]),
    ]
    response = await intake.post("/v1/demands:batch", json=items)
    assert response.status_code == 200, response.text
    assert_nothing_planted_in(response.text)
    results = response.json()["results"]
    assert [(r["id"], r["status"]) for r in results] == [
        ("pb-1", "accepted"),
        (None, "rejected"),  # the id is the personal data: not echoed
        ("pb-3", "rejected"),
    ]
    assert results[1]["errors"] == [{"field": "id", "reason": REASONS["phone"]}]
    assert results[2]["errors"] == [{"field": "customer_ref", "reason": REASONS["card"]}]
    (value,) = await published(kafka_settings, Topic.DEMAND_RECEIVED, 1)
    assert value["team"] == "team of [email]"


@pytest.mark.parametrize("field", ["id", "case_ref", "customer_ref", "purpose"])
async def test_a_case_event_identifier_or_purpose_that_is_personal_data_is_refused(
    intake: httpx.AsyncClient, field: str
) -> None:
    # A purpose is a category (a metrics dimension) that no mask fits: refused, not masked.
    value = "fix my phone 07700 900123" if field == "purpose" else COMPACT["phone"]
    response = await intake.post("/v1/case-events", json=case_event_body(**{field: value}))
    refused(response, (field, "phone"))


@pytest.mark.parametrize("field", ["id", "labelled_by", "purpose", "failure_kind"])
async def test_a_label_identifier_or_category_that_is_personal_data_is_refused(
    intake: httpx.AsyncClient, field: str
) -> None:
    value = {"purpose": "card 4111 1111 1111 1111", "failure_kind": "card 4111 1111 1111 1111"}
    body = label_body(**{field: value.get(field, COMPACT["card"])})
    if field == "failure_kind":
        body["demand_type"] = "failure"
    refused(await intake.post("/v1/demands/d-1/labels", json=body), (field, "card"))


async def test_a_labelled_demand_id_that_is_personal_data_is_refused(
    intake: httpx.AsyncClient,
) -> None:
    response = await intake.post(f"/v1/demands/{EMAIL}/labels", json=label_body())
    refused(response, ("demand_id", "email"))


@pytest.mark.parametrize("attribute", ["id", "source", "subject"])
async def test_a_cloudevent_attribute_that_is_personal_data_is_refused_in_every_mode(
    intake: httpx.AsyncClient, attribute: str
) -> None:
    event = cloudevent_body(**{attribute: COMPACT["email"]})
    structured = await intake.post("/v1/demands", content=json.dumps(event), headers=CE_STRUCTURED)
    refused(structured, (attribute, "email"))

    batch = await intake.post("/v1/demands:batch", content=json.dumps([event]), headers=CE_BATCH)
    assert batch.status_code == 200, batch.text
    assert_nothing_planted_in(batch.text)
    (result,) = batch.json()["results"]
    assert result["status"] == "rejected"
    assert result["errors"] == [{"field": attribute, "reason": REASONS["email"]}]

    envelope = {f"ce-{name}": str(value) for name, value in event.items() if name != "data"}
    binary = await intake.post(
        "/v1/demands",
        content=json.dumps(event["data"]),
        headers={"Content-Type": "application/json", **envelope},
    )
    refused(binary, (f"ce-{attribute}", "email"))


async def test_a_cloudevents_data_is_judged_like_a_plain_demand(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    event = cloudevent_body(id="pce-1")
    event["data"] |= {"team": f"desk {PHONE}", "customer_ref": COMPACT["card"]}
    refused(
        await intake.post("/v1/demands", content=json.dumps(event), headers=CE_STRUCTURED),
        ("customer_ref", "card"),
    )
    event["data"]["customer_ref"] = "C-1"
    accepted = await intake.post("/v1/demands", content=json.dumps(event), headers=CE_STRUCTURED)
    assert accepted.status_code == 202, accepted.text
    (value,) = await published(kafka_settings, Topic.DEMAND_RECEIVED, 1)
    assert value["team"] == "desk [phone]"


# -- no answer echoes a value ---------------------------------------------------------------


async def test_validation_problems_never_echo_what_was_sent(intake: httpx.AsyncClient) -> None:
    cases = [
        # pydantic's own errors: its message is used, never its input...
        demand_body(customer_ref=f"{PHONE} {EMAIL}", occurred_at=f"{CARD}"),
        # ...and a path that holds a key (an attribute's, an unknown field's) is masked.
        demand_body(attributes={EMAIL: "x" * 501}),
        demand_body() | {f"tel {PHONE}": "unknown field"},
    ]
    for body in cases:
        response = await intake.post("/v1/demands", json=body)
        assert response.status_code == 422, response.text
        assert_nothing_planted_in(response.text)
    batch = await intake.post("/v1/demands:batch", json=cases)
    assert batch.json()["rejected"] == 3
    assert_nothing_planted_in(batch.text)
    # A CloudEvent's unknown type and a bad extension name are named without the value.
    odd = cloudevent_body(type=f"type.{EMAIL}") | {f"ext{COMPACT['phone']}@x.io": "1"}
    answer = await intake.post("/v1/demands", content=json.dumps(odd), headers=CE_STRUCTURED)
    assert answer.status_code == 422, answer.text
    assert_nothing_planted_in(answer.text)
