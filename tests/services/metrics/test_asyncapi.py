"""docs/asyncapi.yaml names every topic and points at schema files that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.events import ALL_EVENTS
from shared.events.schema_export import schema_file_name
from shared.topics import Topic

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    return loaded


def test_every_topic_is_a_channel() -> None:
    document = _document()
    addresses = {channel["address"] for channel in document["channels"].values()}

    assert document["asyncapi"].startswith("3.")
    assert {str(topic) for topic in Topic} <= addresses
    assert "{topic}.dlq" in addresses


def test_every_event_schema_is_referenced_and_exists() -> None:
    messages = _document()["components"]["messages"]
    referenced = {m["payload"]["$ref"] for m in messages.values()}

    for event in ALL_EVENTS:
        path = f"./schemas/{schema_file_name(event)}"
        assert path in referenced
        assert (DOCS / path).is_file()
