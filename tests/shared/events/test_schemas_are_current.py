from pathlib import Path

import pytest

from shared.events import ALL_EVENTS, Event
from shared.events.schema_export import render_schema, schema_file_name

SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.__name__)
def test_committed_schema_matches_the_model(event: type[Event]) -> None:
    committed = SCHEMAS / schema_file_name(event)
    assert committed.exists(), f"{committed} is missing: run `make schemas`"
    assert committed.read_text() == render_schema(event), (
        f"{committed.name} is stale: run `make schemas` and commit the result"
    )


def test_no_orphan_schema_files() -> None:
    expected = {schema_file_name(event) for event in ALL_EVENTS}
    assert {p.name for p in SCHEMAS.glob("*.json")} == expected
