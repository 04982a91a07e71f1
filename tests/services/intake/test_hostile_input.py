"""Hostile input (issue 10): bodies that crashed the JSON parser, dates no consumer can
handle, clients that hang up mid-body. Each answers 4xx and reaches nothing; none logs an
error."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.intake.config import EARLIEST_EVENT_TIME
from services.intake.decoding import MalformedBody, batch_items, single_item
from services.intake.validation import (
    Admission,
    InvalidEvent,
    admit_case_event,
    admit_demand,
    admit_label,
)
from shared.events import DemandReceived
from shared.kafka.settings import KafkaSettings
from shared.privacy.redaction import Redactor
from shared.topics import Topic, topic_name
from tests.support.factories import case_event_body, cloudevent_body, demand_body, label_body
from tests.support.kafka_io import read_records
from tests.support.waiting import wait_until

DEEP = b"[" * 1000 + b"]" * 1000  # RecursionError in json.loads
LONG = b"1" * 5000  # ValueError: more digits than int() converts
DEEP_INSIDE = (
    b'{"id": "deep", "attributes": {"a": ' + b"[" * 900 + b"]" * 900 + b"}}"
)  # parses, a field deep below
HOSTILE = {"nested": DEEP, "long_number": LONG, "deep_in_a_field": DEEP_INSIDE}

JSON = "application/json"
CE_STRUCTURED = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "b-1",
    "ce-source": "demo",
    "ce-type": DemandReceived.CE_TYPE,
}
YEAR_1 = "0001-01-01T00:00:00+14:00"  # accepted once; metrics then hit OverflowError
YEAR_61 = "0061-05-01T00:00:00Z"


def admission(**changes: Any) -> Admission:
    fields: dict[str, Any] = {
        "key_source": "demo",
        "now": datetime.now(UTC),
        "max_future_skew": timedelta(seconds=300),
        "redactor": Redactor(),
        "earliest": EARLIEST_EVENT_TIME,
    }
    return Admission(**(fields | changes))


# -- the parser ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, LONG], ids=["nested", "long_number"])
@pytest.mark.parametrize("content_type", [JSON, CE_STRUCTURED])
def test_a_single_body_the_parser_refuses_is_malformed(body: bytes, content_type: str) -> None:
    with pytest.raises(MalformedBody) as error:
        single_item({"content-type": content_type}, body, "demand")
    assert [problem.field for problem in error.value.problems] == ["body"]


@pytest.mark.parametrize("body", [DEEP, LONG], ids=["nested", "long_number"])
def test_a_binary_cloudevent_body_the_parser_refuses_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody) as error:
        single_item({"content-type": JSON, **BINARY}, body, "demand")
    assert "body" in [problem.field for problem in error.value.problems]


@pytest.mark.parametrize("body", [DEEP, LONG], ids=["nested", "long_number"])
@pytest.mark.parametrize("content_type", [JSON, CE_BATCH])
def test_a_batch_body_the_parser_refuses_is_malformed(body: bytes, content_type: str) -> None:
    with pytest.raises(MalformedBody):
        batch_items({"content-type": content_type}, body, "demand")


# -- the date window -------------------------------------------------------------------------


@pytest.mark.parametrize("moment", [YEAR_1, YEAR_61, "1999-12-31T23:59:59Z"])
def test_dates_before_the_window_are_refused_naming_the_field(moment: str) -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: admit_demand(demand_body(occurred_at=moment), admission()), "occurred_at"),
        (lambda: admit_case_event(case_event_body(occurred_at=moment), admission()), "occurred_at"),
        (lambda: admit_label(label_body(labelled_at=moment), "d-1", admission()), "labelled_at"),
    ]
    for admit, field in cases:
        with pytest.raises(InvalidEvent) as error:
            admit()
        [problem] = error.value.problems
        assert problem.field == field
        assert "2000-01-01T00:00:00+00:00" in problem.reason


def test_the_window_is_configurable_and_its_bounds_are_inside() -> None:
    earliest = datetime(2020, 1, 1, tzinfo=UTC)
    window = admission(earliest=earliest)
    assert admit_demand(demand_body(occurred_at=earliest), window).occurred_at == earliest
    with pytest.raises(InvalidEvent):
        admit_demand(demand_body(occurred_at=earliest - timedelta(seconds=1)), window)
    ahead = window.now + window.max_future_skew
    assert admit_demand(demand_body(occurred_at=ahead), window).occurred_at == ahead
    with pytest.raises(InvalidEvent) as error:
        admit_demand(demand_body(occurred_at=ahead + timedelta(seconds=1)), window)
    assert "in the future" in error.value.problems[0].reason


# -- over HTTP: every endpoint, every mode -----------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/demands", {"Content-Type": JSON}),
        ("/v1/demands", {"Content-Type": CE_STRUCTURED}),
        ("/v1/demands", {"Content-Type": JSON, **BINARY}),
        ("/v1/demands:batch", {"Content-Type": JSON}),
        ("/v1/demands:batch", {"Content-Type": CE_BATCH}),
        ("/v1/case-events", {"Content-Type": JSON}),
        ("/v1/demands/d-1/labels", {"Content-Type": JSON}),
    ],
    ids=["json", "structured", "binary", "batch", "ce-batch", "case-event", "label"],
)
async def test_hostile_bodies_answer_4xx_and_log_no_error(
    intake: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    response = await intake.post(path, content=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.integration
async def test_out_of_window_dates_get_422_over_http_in_every_form_and_reach_nothing(
    intake: httpx.AsyncClient, kafka_settings: KafkaSettings
) -> None:
    single = await intake.post("/v1/demands", json=demand_body(occurred_at=YEAR_1))
    assert single.status_code == 422, single.text
    assert [e["field"] for e in single.json()["errors"]] == ["occurred_at"]

    batch = await intake.post("/v1/demands:batch", json=[demand_body(occurred_at=YEAR_61)])
    assert batch.status_code == 200
    [result] = batch.json()["results"]
    assert (result["status"], result["errors"][0]["field"]) == ("rejected", "occurred_at")

    # A CloudEvent's time stands in for a missing occurred_at, and is judged as one.
    enveloped = await intake.post(
        "/v1/demands",
        content=json.dumps(cloudevent_body(time=YEAR_1)),
        headers={"Content-Type": CE_STRUCTURED},
    )
    assert enveloped.status_code == 422, enveloped.text
    assert [e["field"] for e in enveloped.json()["errors"]] == ["occurred_at"]

    case = await intake.post("/v1/case-events", json=case_event_body(occurred_at=YEAR_61))
    assert case.status_code == 422
    assert [e["field"] for e in case.json()["errors"]] == ["occurred_at"]

    label = await intake.post("/v1/demands/d-1/labels", json=label_body(labelled_at=YEAR_1))
    assert label.status_code == 422
    assert [e["field"] for e in label.json()["errors"]] == ["labelled_at"]

    good = demand_body()
    assert (await intake.post("/v1/demands", json=good)).status_code == 202
    published = await read_records(
        kafka_settings, topic_name(kafka_settings, Topic.DEMAND_RECEIVED), count=1, timeout=20
    )
    assert [json.loads(record.value)["id"] for record in published] == [good["id"]]


# -- a client that hangs up mid-body -----------------------------------------------------------


@pytest.mark.integration
async def test_a_client_that_disconnects_mid_body_is_logged_at_info_not_as_an_error(
    intake_url: str, demo_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    host, port = intake_url.removeprefix("http://").split(":")
    body = json.dumps(demand_body()).encode()
    head = (
        f"POST /v1/demands HTTP/1.1\r\nHost: intake\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {demo_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    def send_half_and_hang_up() -> None:
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(head + body[: len(body) // 2])

    await asyncio.to_thread(send_half_and_hang_up)

    def logged() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR or "client disconnected" in r.getMessage()
        ]

    async def anything_logged() -> bool:
        return bool(logged())

    await wait_until(anything_logged, what="the disconnect logged")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert {r.levelno for r in logged()} == {logging.INFO}
