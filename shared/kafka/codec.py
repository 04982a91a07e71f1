"""Events to Kafka records and back: JSON values, CloudEvents attributes in headers.

Follows the CloudEvents Kafka protocol binding, binary content mode: the attributes travel
as ``ce_*`` headers and the record value is the event's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError

from shared.events import Event

E = TypeVar("E", bound=Event)

Headers = list[tuple[str, bytes]]
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class OutboundRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


class DecodeError(ValueError):
    """A record that cannot become the event its topic carries. Its reason is for people."""


def encode(event: Event, *, topic: str, source: str) -> OutboundRecord:
    headers: Headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", event.event_id().encode()),
        ("ce_type", event.CE_TYPE.encode()),
        ("ce_source", source.encode()),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    return OutboundRecord(
        topic=topic,
        key=event.partition_key().encode(),
        value=event.model_dump_json().encode(),
        headers=headers,
    )


def header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None


def decode(model: type[E], value: bytes | None) -> E:
    if value is None:
        raise DecodeError("record has no value")
    try:
        return model.model_validate_json(value)
    except ValidationError as error:
        raise DecodeError(describe_validation_error(error)) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:  # pragma: no cover - pydantic wraps
        raise DecodeError(f"not JSON: {error}") from error


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem: the field path and the reason."""
    problems = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(value)"
        problems.append(f"{location}: {item['msg']}")
    return "; ".join(problems)
