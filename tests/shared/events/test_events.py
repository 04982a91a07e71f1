from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.events import Channel, DemandClassified, DemandReceived, DemandType
from shared.events.classification import ClassificationMethod


def demand(**overrides: object) -> DemandReceived:
    fields: dict[str, object] = {
        "id": "d-1",
        "occurred_at": datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        "received_at": datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC),
        "channel": "phone",
        "source": "demo",
        "customer_ref": "C-1",
        "text": "Where is my engineer?",
    }
    return DemandReceived.model_validate(fields | overrides)


def test_a_demand_is_keyed_by_customer_and_identified_by_its_sender_id() -> None:
    event = demand()
    assert event.partition_key() == "C-1"
    assert event.event_id() == "d-1"
    assert event.channel is Channel.PHONE


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        demand(occurred_at=datetime(2026, 11, 20, 9, 0))


@pytest.mark.parametrize(
    ("field", "value"),
    [("text", ""), ("channel", "pigeon"), ("id", "has space"), ("customer_ref", "")],
)
def test_invalid_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        demand(**{field: value})
    assert error.value.errors()[0]["loc"] == (field,)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        demand(colour="blue")


def test_a_classification_is_keyed_like_its_demand() -> None:
    classified = DemandClassified(
        demand=demand(),
        demand_type=DemandType.FAILURE,
        failure_kind="progress_chasing",
        purpose="engineer visit",
        confidence=0.9,
        method=ClassificationMethod.RULE,
        model_version="x",
        classified_at=datetime(2026, 11, 20, 9, 1, tzinfo=UTC),
    )
    assert classified.partition_key() == "C-1"
    assert classified.event_id() == "d-1"
