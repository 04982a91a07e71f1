"""From an HTTP body and its media type to the JSON objects to admit, one per event.

Four forms reach the same admission: plain JSON, and CloudEvents in structured
(``application/cloudevents+json``), binary (``ce-*`` headers) and batch
(``application/cloudevents-batch+json``) modes. Anything else is a 415.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.intake.body import InvalidJson, parse_json
from services.intake.cloudevents import (
    CloudEvent,
    CloudEventError,
    EventKind,
    event_kind,
    parse_batch_items,
    parse_binary,
    parse_structured,
)
from shared.privacy import personal_data_kind, refusal_reason
from shared.service.problems import FieldProblem

JSON = "application/json"
CE_STRUCTURED = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"

Mode = Literal["json", "structured", "binary", "batch"]


class UnsupportedMediaType(ValueError):
    def __init__(self, media_type: str, accepted: tuple[str, ...]) -> None:
        super().__init__(
            f"{media_type or 'no content type'} is not accepted; send one of: "
            + ", ".join(accepted)
        )
        self.accepted = accepted


class MalformedBody(ValueError):
    """The body as a whole cannot be read: nothing in it is admitted."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))
        self.problems = problems


# Slotted, not frozen: a batch makes one per item, and a frozen dataclass sets each field
# through object.__setattr__ (1.3 against 0.35 µs an item, measured). Nothing changes one.
@dataclass(slots=True)
class Item:
    """One event to admit, or the reasons its envelope was refused."""

    payload: Any
    event_id: str | None = None  # a CloudEvent's envelope id, fit to answer back
    problems: list[FieldProblem] = field(default_factory=list)
    id_in_payload: bool = False  # a plain JSON item: its id is the payload's

    def answer_id(self) -> str | None:
        """The id a rejection of this item names: None if there is none or it is personal
        data. Looked at only when an item is rejected (an accepted one is answered with its
        event's id), so a batch checks its good items' ids once, in admission."""
        return _id_of(self.payload) if self.id_in_payload else self.event_id


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def single_mode(headers: Mapping[str, str]) -> Mode:
    return _single_mode(headers.get("content-type"), "ce-specversion" in headers)


def single_mode_of(raw_headers: Iterable[tuple[bytes, bytes]]) -> Mode:
    """``single_mode`` of a request's ASGI headers (names in lower case), read in one pass:
    the first Content-Type, as ``request.headers`` gives it, and whether a ce-specversion
    is there. Starlette's Headers lower-case and encode each name asked for and walk the
    list for it (~1 µs a single request for the two, measured)."""
    content_type: bytes | None = None
    binary = False
    for name, value in raw_headers:
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"ce-specversion":
            binary = True
    return _single_mode(None if content_type is None else content_type.decode("latin-1"), binary)


def _single_mode(content_type: str | None, binary: bool) -> Mode:
    kind = media_type(content_type)
    if kind == CE_STRUCTURED:
        return "structured"
    if kind == JSON:
        return "binary" if binary else "json"
    raise UnsupportedMediaType(kind, (JSON, CE_STRUCTURED, f"{JSON} with ce-* headers"))


def batch_mode(headers: Mapping[str, str]) -> Mode:
    kind = media_type(headers.get("content-type"))
    if kind == CE_BATCH:
        return "batch"
    if kind == JSON:
        return "json"
    raise UnsupportedMediaType(kind, (JSON, CE_BATCH))


def single_item(
    headers: Mapping[str, str], body: bytes, expected: EventKind, mode: Mode | None = None
) -> Item:
    """The one event of a single-event request; raises MalformedBody or UnsupportedMediaType.

    ``mode``, when the caller has it (``single_mode_of``): the headers are then read only in
    binary mode, for the event's ``ce-*`` attributes."""
    if mode is None:
        mode = single_mode(headers)
    if mode == "json":
        # No id to answer back here (a single event's answer names the admitted event's):
        # checking it for personal data is admission's job, done once there.
        return Item(_json(body))
    try:
        event = parse_structured(body) if mode == "structured" else parse_binary(headers, body)
    except CloudEventError as error:
        raise MalformedBody(error.problems) from error
    item = _from_cloudevent(event, expected, "ce-" if mode == "binary" else "")
    if item.problems:
        raise MalformedBody(item.problems)
    return item


def batch_items(headers: Mapping[str, str], body: bytes, expected: EventKind) -> list[Item]:
    """Every item of a batch, each admitted or refused on its own."""
    if batch_mode(headers) == "json":
        document = _json(body)
        if isinstance(document, Mapping) and isinstance(document.get("items"), list):
            document = document["items"]
        if not isinstance(document, list):
            raise MalformedBody(
                [FieldProblem(field="body", reason="expected a JSON array of events")]
            )
        return [Item(entry, id_in_payload=True) for entry in document]
    try:
        parsed = parse_batch_items(body)
    except CloudEventError as error:
        raise MalformedBody(error.problems) from error
    return [
        Item(None, problems=entry.problems)
        if isinstance(entry, CloudEventError)
        else _from_cloudevent(entry, expected, "")
        for entry in parsed
    ]


def _from_cloudevent(event: CloudEvent, expected: EventKind, prefix: str) -> Item:
    """The event's data as the object to admit, its envelope filling what the data leaves out.

    The envelope's ``id``, ``source`` and ``subject`` name things: personal data in them is
    refused like in any identifier (``prefix`` is "ce-" in binary mode, where they are headers).
    """
    event_id = _safe_id(event.id)
    refused = [
        FieldProblem(field=prefix + name, reason=refusal_reason(kind))
        for name, value in (("id", event.id), ("source", event.source), ("subject", event.subject))
        if value is not None and (kind := personal_data_kind(value)) is not None
    ]
    if refused:
        return Item(None, event_id, refused)
    try:
        kind = event_kind(event)
    except CloudEventError as error:
        return Item(None, event_id, error.problems)
    if kind != expected:
        return Item(
            None, event_id, [FieldProblem(field="type", reason=f"a {kind} cannot be posted here")]
        )
    payload: dict[str, Any] = dict(event.data)
    payload.setdefault("id", event.id)
    if kind != "label":  # a label names no source: the reviewer's key says who
        payload.setdefault("source", event.source)
    moment = "labelled_at" if kind == "label" else "occurred_at"
    if moment not in payload and event.time is not None:
        payload[moment] = event.time
    return Item(payload, event_id)


def _json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except InvalidJson as error:
        raise MalformedBody([FieldProblem(field="body", reason=str(error))]) from error


def _id_of(document: Any) -> str | None:
    # JSON objects are dicts: the exact type check is far cheaper than an ABC's.
    if (type(document) is dict or isinstance(document, Mapping)) and isinstance(
        event_id := document.get("id"), str
    ):
        return _safe_id(event_id)
    return None


def _safe_id(event_id: str) -> str | None:
    """An id fit to answer back (a batch names each item's id): not personal data."""
    return None if personal_data_kind(event_id) is not None else event_id[:200]
