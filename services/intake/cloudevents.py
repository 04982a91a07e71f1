"""CloudEvents v1.0 over HTTP: structured, batch and binary modes, parsed without a framework.

Hand-parsed rather than through the ``cloudevents`` SDK: the SDK calls itself a work in
progress that "might break with every update", invents an ``id`` and ``time`` when they
are missing (intake needs the sender's id: it is the idempotency key), has no batch
mode in ``from_http``, and raises on the first fault without saying which field. Here
every fault is collected with its path, so a sender learns all of them in one answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote

from services.intake.body import InvalidJson, parse_json
from shared.events import CaseEvent, DemandLabelled, DemandReceived
from shared.service.problems import FieldProblem

SPEC_VERSION = "1.0"
REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
OPTIONAL_ATTRIBUTES = ("time", "datacontenttype", "dataschema", "subject")

EventKind = Literal["demand", "case_event", "label"]
ACCEPTED_TYPES: dict[str, EventKind] = {
    DemandReceived.CE_TYPE: "demand",
    CaseEvent.CE_TYPE: "case_event",
    DemandLabelled.CE_TYPE: "label",
}

_HEADER_PREFIX = "ce-"
# The spec: extension names are lower-case ASCII letters and digits.
_EXTENSION_NAME = re.compile(r"^[a-z0-9]+$")


class CloudEventError(ValueError):
    """Every fault of an event, each with its path ("id", "[2].source", "ce-type", "body")."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{problem.field}: {problem.reason}" for problem in problems))
        self.problems = problems


@dataclass(frozen=True)
class CloudEvent:
    id: str
    source: str
    type: str
    specversion: str
    time: datetime | None
    data: Any
    extensions: dict[str, Any] = field(default_factory=dict)
    datacontenttype: str | None = None
    dataschema: str | None = None
    subject: str | None = None


def parse_structured(body: bytes) -> CloudEvent:
    """``Content-Type: application/cloudevents+json``: one JSON object holds it all."""
    document = _load_json(body)
    if not isinstance(document, dict):
        raise CloudEventError([FieldProblem(field="body", reason="expected a JSON object")])
    problems: list[FieldProblem] = []
    event = _event_from_object(document, "", problems)
    if event is None:
        raise CloudEventError(problems)
    return event


def parse_batch(body: bytes) -> list[CloudEvent]:
    """``Content-Type: application/cloudevents-batch+json``: a JSON array of events.

    The batch is all or nothing: one bad event rejects it, with every fault listed.
    """
    document = _load_json(body)
    if not isinstance(document, list):
        raise CloudEventError([FieldProblem(field="body", reason="expected a JSON array")])
    problems: list[FieldProblem] = []
    events: list[CloudEvent] = []
    for index, item in enumerate(document):
        prefix = f"[{index}]"
        if not isinstance(item, dict):
            problems.append(FieldProblem(field=prefix, reason="expected a JSON object"))
            continue
        event = _event_from_object(item, prefix + ".", problems)
        if event is not None:
            events.append(event)
    if problems:
        raise CloudEventError(problems)
    return events


def parse_batch_items(body: bytes) -> list[CloudEvent | CloudEventError]:
    """A batch read item by item: one bad event is reported in its place, not fatal.

    Intake answers a result per item, so one bad event does not sink its neighbours.
    """
    document = _load_json(body)
    if not isinstance(document, list):
        raise CloudEventError([FieldProblem(field="body", reason="expected a JSON array")])
    items: list[CloudEvent | CloudEventError] = []
    for item in document:
        if not isinstance(item, dict):
            items.append(
                CloudEventError([FieldProblem(field="body", reason="expected a JSON object")])
            )
            continue
        problems: list[FieldProblem] = []
        event = _event_from_object(item, "", problems)
        items.append(event if event is not None else CloudEventError(problems))
    return items


def parse_binary(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Attributes in ``ce-*`` headers, the data as the JSON body."""
    lowered = {name.lower(): value for name, value in headers.items()}
    problems: list[FieldProblem] = []
    attributes: dict[str, Any] = {
        # Header values are percent-encoded by the HTTP binding.
        name[len(_HEADER_PREFIX) :]: unquote(value)
        for name, value in lowered.items()
        if name.startswith(_HEADER_PREFIX)
    }
    content_type = lowered.get("content-type")
    if content_type is None or not _is_json_media_type(content_type):
        problems.append(FieldProblem(field="content-type", reason="expected application/json"))
    else:
        attributes["datacontenttype"] = content_type
    try:
        attributes["data"] = parse_json(body)
    except InvalidJson as error:
        problems.append(FieldProblem(field="body", reason=str(error)))
    event = _event_from_object(attributes, _HEADER_PREFIX, problems)
    if event is None or problems:
        raise CloudEventError(problems)
    return event


def event_kind(event: CloudEvent) -> EventKind:
    kind = ACCEPTED_TYPES.get(event.type)
    if kind is None:
        accepted = ", ".join(sorted(ACCEPTED_TYPES))
        raise CloudEventError(
            [
                FieldProblem(
                    field="type", reason=f"unsupported type {event.type!r}; accepted: {accepted}"
                )
            ]
        )
    return kind


def demand_payload(event: CloudEvent) -> dict[str, Any]:
    """The demand's fields, with the envelope filling what the data leaves out.

    The demand's ``id`` defaults to the CloudEvent id, ``source`` to its source and
    ``occurred_at`` to its time. What is in the data always wins.
    """
    if event_kind(event) != "demand":
        raise CloudEventError(
            [FieldProblem(field="type", reason=f"expected {DemandReceived.CE_TYPE!r}")]
        )
    payload: dict[str, Any] = dict(event.data)
    payload.setdefault("id", event.id)
    payload.setdefault("source", event.source)
    if "occurred_at" not in payload and event.time is not None:
        payload["occurred_at"] = event.time
    return payload


def _load_json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except InvalidJson as error:
        raise CloudEventError([FieldProblem(field="body", reason=str(error))]) from error


def _event_from_object(
    document: Mapping[str, Any], prefix: str, problems: list[FieldProblem]
) -> CloudEvent | None:
    """Reads one event, appending every fault to ``problems``; None when there were any."""
    found = len(problems)
    required = {
        name: _required_string(document, name, prefix, problems) for name in REQUIRED_ATTRIBUTES
    }
    specversion = required["specversion"]
    if specversion is not None and specversion != SPEC_VERSION:
        problems.append(
            FieldProblem(
                field=f"{prefix}specversion",
                reason=f"unsupported {specversion!r}; only '1.0' is accepted",
            )
        )
    optional = {
        name: _optional_string(document, name, prefix, problems) for name in OPTIONAL_ATTRIBUTES
    }
    time = _timestamp(optional["time"], f"{prefix}time", problems)
    content_type = optional["datacontenttype"]
    if content_type is not None and not _is_json_media_type(content_type):
        problems.append(
            FieldProblem(field=f"{prefix}datacontenttype", reason="expected a JSON media type")
        )
    if "data_base64" in document:
        problems.append(
            FieldProblem(
                field=f"{prefix}data_base64", reason="binary data is not accepted; send JSON"
            )
        )
    data = document.get("data")
    if "data" not in document:
        # In binary mode a missing body was already reported as invalid JSON.
        if prefix != _HEADER_PREFIX:
            problems.append(FieldProblem(field=f"{prefix}data", reason="required for intake"))
    elif not isinstance(data, dict):
        problems.append(
            FieldProblem(
                field=f"{prefix}data" if prefix != _HEADER_PREFIX else "body",
                reason="must be a JSON object",
            )
        )
    extensions = _extensions(document, prefix, problems)
    if len(problems) > found:
        return None
    return CloudEvent(
        id=str(required["id"]),
        source=str(required["source"]),
        type=str(required["type"]),
        specversion=str(specversion),
        time=time,
        data=data,
        extensions=extensions,
        datacontenttype=content_type,
        dataschema=optional["dataschema"],
        subject=optional["subject"],
    )


def _required_string(
    document: Mapping[str, Any], name: str, prefix: str, problems: list[FieldProblem]
) -> str | None:
    if name not in document:
        problems.append(FieldProblem(field=prefix + name, reason="required attribute is missing"))
        return None
    value = document[name]
    if not isinstance(value, str) or not value:
        problems.append(FieldProblem(field=prefix + name, reason="must be a non-empty string"))
        return None
    return value


def _optional_string(
    document: Mapping[str, Any], name: str, prefix: str, problems: list[FieldProblem]
) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem(field=prefix + name, reason="must be a string"))
        return None
    return value


def _timestamp(value: str | None, path: str, problems: list[FieldProblem]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.append(FieldProblem(field=path, reason="must be an RFC 3339 timestamp"))
        return None
    if parsed.tzinfo is None:
        problems.append(FieldProblem(field=path, reason="must carry a time zone offset, e.g. 'Z'"))
        return None
    return parsed


def _extensions(
    document: Mapping[str, Any], prefix: str, problems: list[FieldProblem]
) -> dict[str, Any]:
    known = {*REQUIRED_ATTRIBUTES, *OPTIONAL_ATTRIBUTES, "data", "data_base64"}
    extensions: dict[str, Any] = {}
    for name, value in document.items():
        if name in known:
            continue
        if not _EXTENSION_NAME.match(name):
            problems.append(
                FieldProblem(
                    field=prefix + name, reason="extension names are lower-case letters and digits"
                )
            )
        elif value is not None and not isinstance(value, str | int | bool):
            problems.append(
                FieldProblem(
                    field=prefix + name, reason="extension values are strings, integers or booleans"
                )
            )
        else:
            extensions[name] = value
    return extensions


def _is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")
