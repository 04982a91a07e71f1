"""The label's "not a demand" answer: additive within version 1, and one answer only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.events import DemandLabelled
from tests.support.factories import demand_labelled


def test_a_label_without_the_field_reads_as_a_demand() -> None:
    label = demand_labelled()
    fields = label.model_dump(mode="json")
    del fields["not_a_demand"]  # as written before the field existed
    assert DemandLabelled.model_validate(fields).not_a_demand is False


def test_not_a_demand_carries_type_unknown_and_no_kind() -> None:
    label = demand_labelled(not_a_demand=True, demand_type="unknown", failure_kind=None)
    again = DemandLabelled.model_validate_json(label.model_dump_json())
    assert again.not_a_demand is True
    assert again == label


@pytest.mark.parametrize("demand_type", ["value", "failure"])
def test_not_a_demand_with_a_type_is_refused(demand_type: str) -> None:
    with pytest.raises(ValidationError, match="must have demand_type 'unknown'"):
        demand_labelled(not_a_demand=True, demand_type=demand_type, failure_kind=None)


def test_not_a_demand_with_a_failure_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="must have no failure_kind"):
        demand_labelled(not_a_demand=True, demand_type="unknown", failure_kind="repeat")
