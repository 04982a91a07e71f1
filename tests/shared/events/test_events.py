from datetime import datetime

import pytest
from pydantic import ValidationError

from shared.events import Channel, DemandType
from tests.support.factories import demand_classified, demand_received


def test_a_demand_is_keyed_by_customer_and_identified_by_its_sender_id() -> None:
    event = demand_received(id="d-1", customer_ref="C-1", channel="phone")
    assert event.partition_key() == "C-1"
    assert event.event_id() == "d-1"
    assert event.channel is Channel.PHONE


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        demand_received(occurred_at=datetime(2026, 11, 20, 9, 0))


@pytest.mark.parametrize(
    ("field", "value"),
    [("text", ""), ("channel", "pigeon"), ("id", "has space"), ("customer_ref", "")],
)
def test_invalid_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        demand_received(**{field: value})
    assert error.value.errors()[0]["loc"] == (field,)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        demand_received(colour="blue")


def test_a_classification_is_keyed_like_its_demand() -> None:
    classified = demand_classified(
        id="d-1",
        customer_ref="C-1",
        demand_type=DemandType.FAILURE,
        failure_kind="progress_chasing",
        purpose="engineer visit",
    )
    assert classified.partition_key() == "C-1"
    assert classified.event_id() == "d-1"
