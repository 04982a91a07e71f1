"""Parsing CloudEvents over HTTP in the three content modes, and every fault with its path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.intake.cloudevents import (
    ACCEPTED_TYPES,
    CloudEvent,
    CloudEventError,
    demand_payload,
    event_kind,
    parse_batch,
    parse_binary,
    parse_structured,
)
from shared.service.problems import FieldProblem
from tests.support.factories import cloudevent_body

DEMAND_TYPE = "org.demandscope.demand.received.v1"


# The envelope these tests parse: fixed, so the assertions can name every value.
ENVELOPE: dict[str, Any] = {
    "id": "evt-1",
    "source": "genesys-eu",
    "type": DEMAND_TYPE,
    "time": "2024-03-12T10:30:00Z",
    "datacontenttype": "application/json",
    "data": {"customer_ref": "c-42", "channel": "phone", "text": "where is my engineer?"},
}


def structured(**overrides: Any) -> dict[str, Any]:
    """ENVELOPE with ``overrides`` (``...`` leaves an attribute out)."""
    return cloudevent_body(**(ENVELOPE | overrides))


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def problems_of(error: pytest.ExceptionInfo[CloudEventError]) -> list[FieldProblem]:
    return error.value.problems


def problem(field: str, reason: str) -> FieldProblem:
    return FieldProblem(field=field, reason=reason)


def test_parses_a_structured_event() -> None:
    event = parse_structured(encode(structured(tenant="north")))
    assert event == CloudEvent(
        id="evt-1",
        source="genesys-eu",
        type=DEMAND_TYPE,
        specversion="1.0",
        time=datetime(2024, 3, 12, 10, 30, tzinfo=UTC),
        data={"customer_ref": "c-42", "channel": "phone", "text": "where is my engineer?"},
        extensions={"tenant": "north"},
        datacontenttype="application/json",
    )


def test_bad_json_is_reported_on_the_body() -> None:
    with pytest.raises(CloudEventError) as error:
        parse_structured(b'{"id": ')
    assert [problem.field for problem in problems_of(error)] == ["body"]
    assert problems_of(error)[0].reason.startswith("invalid JSON")


def test_every_missing_required_attribute_is_named() -> None:
    with pytest.raises(CloudEventError) as error:
        parse_structured(encode(structured(id=..., source=..., specversion=..., type=...)))
    assert problems_of(error) == [
        problem("id", "required attribute is missing"),
        problem("source", "required attribute is missing"),
        problem("specversion", "required attribute is missing"),
        problem("type", "required attribute is missing"),
    ]


@pytest.mark.parametrize(
    ("overrides", "path", "reason"),
    [
        ({"specversion": "0.3"}, "specversion", "unsupported '0.3'; only '1.0' is accepted"),
        ({"id": ""}, "id", "must be a non-empty string"),
        ({"source": 7}, "source", "must be a non-empty string"),
        ({"data": ["not", "an", "object"]}, "data", "must be a JSON object"),
        ({"data": ...}, "data", "required for intake"),
        ({"time": "yesterday"}, "time", "must be an RFC 3339 timestamp"),
        ({"time": "2024-03-12T10:30:00"}, "time", "must carry a time zone offset, e.g. 'Z'"),
        ({"datacontenttype": "text/plain"}, "datacontenttype", "expected a JSON media type"),
        ({"Bad-Name": "x"}, "Bad-Name", "extension names are lower-case letters and digits"),
        ({"data_base64": "AAAA"}, "data_base64", "binary data is not accepted; send JSON"),
    ],
)
def test_structured_faults_carry_their_field_path(
    overrides: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(CloudEventError) as error:
        parse_structured(encode(structured(**overrides)))
    assert problems_of(error) == [problem(path, reason)]


def test_a_structured_body_must_be_an_object() -> None:
    with pytest.raises(CloudEventError) as error:
        parse_structured(encode([structured()]))
    assert problems_of(error) == [problem("body", "expected a JSON object")]


def test_parses_a_batch_in_order() -> None:
    events = parse_batch(encode([structured(id="a"), structured(id="b")]))
    assert [event.id for event in events] == ["a", "b"]


def test_an_empty_batch_is_valid() -> None:
    assert parse_batch(b"[]") == []


def test_batch_faults_are_indexed_and_all_reported() -> None:
    body = encode([structured(), "nope", structured(id=..., data=3)])
    with pytest.raises(CloudEventError) as error:
        parse_batch(body)
    assert problems_of(error) == [
        problem("[1]", "expected a JSON object"),
        problem("[2].id", "required attribute is missing"),
        problem("[2].data", "must be a JSON object"),
    ]


def test_a_batch_body_must_be_an_array() -> None:
    with pytest.raises(CloudEventError) as error:
        parse_batch(encode(structured()))
    assert problems_of(error) == [problem("body", "expected a JSON array")]


def binary_headers(**overrides: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "ce-specversion": "1.0",
        "ce-id": "evt-9",
        "ce-source": "genesys-eu",
        "ce-type": DEMAND_TYPE,
        "ce-time": "2024-03-12T10:30:00%2B01:00",
        "Content-Type": "application/json; charset=utf-8",
    }
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return {name: value for name, value in headers.items() if value is not None}


def test_parses_a_binary_event_with_case_insensitive_percent_encoded_headers() -> None:
    headers = {
        name.upper(): value for name, value in binary_headers(**{"ce_tenant": "a%20b"}).items()
    }
    event = parse_binary(headers, b'{"text": "hi"}')
    assert event.id == "evt-9"
    assert event.time == datetime.fromisoformat("2024-03-12T10:30:00+01:00")
    assert event.data == {"text": "hi"}
    assert event.extensions == {"tenant": "a b"}
    assert event.datacontenttype == "application/json; charset=utf-8"


def test_binary_faults_name_the_headers() -> None:
    headers = binary_headers(ce_id=None, ce_specversion="2.0", Content_Type="text/plain")
    with pytest.raises(CloudEventError) as error:
        parse_binary(headers, b"[1]")
    assert problems_of(error) == [
        problem("content-type", "expected application/json"),
        problem("ce-id", "required attribute is missing"),
        problem("ce-specversion", "unsupported '2.0'; only '1.0' is accepted"),
        problem("body", "must be a JSON object"),
    ]


def test_binary_bad_json_body() -> None:
    with pytest.raises(CloudEventError) as error:
        parse_binary(binary_headers(), b"not json")
    assert [problem.field for problem in problems_of(error)] == ["body"]


def test_accepted_types_map_to_kinds() -> None:
    assert ACCEPTED_TYPES == {
        "org.demandscope.demand.received.v1": "demand",
        "org.demandscope.case.event.v1": "case_event",
        "org.demandscope.demand.labelled.v1": "label",
    }
    with pytest.raises(CloudEventError) as error:
        event_kind(parse_structured(encode(structured(type="com.example.other"))))
    assert problems_of(error)[0].field == "type"


def test_demand_payload_fills_id_source_and_occurred_at_from_the_envelope() -> None:
    event = parse_structured(encode(structured()))
    assert demand_payload(event) == {
        "customer_ref": "c-42",
        "channel": "phone",
        "text": "where is my engineer?",
        "id": "evt-1",
        "source": "genesys-eu",
        "occurred_at": datetime(2024, 3, 12, 10, 30, tzinfo=UTC),
    }


def test_demand_payload_keeps_what_the_data_says() -> None:
    data = {"id": "d-7", "source": "crm", "occurred_at": "2024-01-01T00:00:00Z", "text": "x"}
    event = parse_structured(encode(structured(data=data)))
    assert demand_payload(event) == data


def test_demand_payload_without_time_leaves_occurred_at_out() -> None:
    event = parse_structured(encode(structured(time=...)))
    assert "occurred_at" not in demand_payload(event)


def test_demand_payload_refuses_other_kinds() -> None:
    event = parse_structured(encode(structured(type="org.demandscope.case.event.v1")))
    with pytest.raises(CloudEventError):
        demand_payload(event)
