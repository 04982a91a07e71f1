"""JSON Schema of every event, written to docs/schemas/ and checked for staleness by a test."""

from __future__ import annotations

import json
from pathlib import Path

from shared.events import ALL_EVENTS, Event


def schema_file_name(event: type[Event]) -> str:
    return f"{event.__name__}.v{event.SCHEMA_VERSION}.schema.json"


def render_schema(event: type[Event]) -> str:
    schema = event.model_json_schema(mode="serialization")
    schema["$id"] = f"https://demandscope.org/schemas/{schema_file_name(event)}"
    schema["x-cloudevents-type"] = event.CE_TYPE
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for event in ALL_EVENTS:
        path = folder / schema_file_name(event)
        path.write_text(render_schema(event))
        written.append(path)
    return written
