"""The test factories (tests/support/factories.py) cover every event and make valid ones."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.intake.schemas import CaseEventSubmission, DemandSubmission, LabelSubmission
from shared.events import ALL_EVENTS, DemandReceived, Event, PurposeMetrics
from tests.support import factories

EVENT_FACTORIES = {
    factories.demand_received,
    factories.case_event,
    factories.demand_classified,
    factories.demand_labelled,
    factories.purpose_metrics,
    factories.special_cause_signalled,
    factories.system_changed,
}


def test_every_event_has_a_factory_whose_events_are_distinct() -> None:
    made: list[Event] = [make() for make in EVENT_FACTORIES for _ in range(2)]
    assert {type(event) for event in made} == set(ALL_EVENTS)
    ids = [event.event_id() for event in made if not isinstance(event, PurposeMetrics)]
    assert len(ids) == len(set(ids))  # unique by default (purpose metrics are per purpose)


def test_overrides_are_validated_like_the_event() -> None:
    with pytest.raises(ValidationError, match="extra"):
        factories.case_event(colour="blue")


def test_a_classification_takes_its_demands_fields_or_the_demand_whole() -> None:
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    classified = factories.demand_classified(id="d-1", occurred_at=at, purpose="move home")
    assert (classified.demand.id, classified.classified_at, classified.purpose) == (
        "d-1",
        at,
        "move home",
    )
    demand = factories.demand_received()
    assert factories.demand_classified(demand=demand).demand is demand
    with pytest.raises(TypeError, match="not both"):
        factories.demand_classified(demand=demand, id="d-2")


def test_bodies_are_what_intake_accepts_and_leave_out_what_is_given_as_ellipsis() -> None:
    DemandSubmission.model_validate(factories.demand_body())
    CaseEventSubmission.model_validate(factories.case_event_body())
    LabelSubmission.model_validate(factories.label_body())
    assert "source" not in factories.demand_body(source=...)
    envelope = factories.cloudevent_body()
    assert envelope["type"] == DemandReceived.CE_TYPE
    assert {"id", "source", "occurred_at"}.isdisjoint(envelope["data"])
