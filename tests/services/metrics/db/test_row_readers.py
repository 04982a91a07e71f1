"""The write path's row readers and the stitcher's freeze build their dataclasses by
position (a class called with keywords costs a dict a call): each equals the keyword form,
field by field, for values that differ in every field, so a swapped position fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.metrics.db.write_path import _case_event_of, _demand_of
from services.metrics.domain.cases import (
    FULFILLED,
    Case,
    CaseEventFact,
    DemandFact,
    _Building,
)

_AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _read_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def test_a_demand_row_reads_as_the_keyword_form() -> None:
    # _DEMAND_READ's columns, each a value of its own.
    row = (
        "src",
        "cust",
        "dem",
        "2026-03-04 05:06:07.890123",
        "phone",
        "team-a",
        "ref-1",
        "purpose-x",
        "failure",
        "kind-k",
        "case",
        "cause-ref",
    )
    assert _demand_of(row, _read_time) == DemandFact(
        demand_id="dem",
        customer_ref="cust",
        occurred_at=_AT,
        channel="phone",
        team="team-a",
        case_ref="ref-1",
        purpose="purpose-x",
        demand_type="failure",
        failure_kind="kind-k",
        caused_by_kind="case",
        caused_by_ref="cause-ref",
    )


def test_a_case_event_row_reads_as_the_keyword_form() -> None:
    # _CASE_EVENTS's columns: source, customer_ref, event_id, case_ref, type, occurred_at,
    # purpose.
    row = ("src", "cust", "ev", "ref-1", "fulfilled", "2026-03-04 05:06:07.890123", "px")
    assert _case_event_of(row, _read_time) == CaseEventFact(
        event_id="ev",
        case_ref="ref-1",
        customer_ref="cust",
        type="fulfilled",
        occurred_at=_AT,
        purpose="px",
    )


def test_a_frozen_case_is_the_keyword_form() -> None:
    first = DemandFact(
        demand_id="d1",
        customer_ref="cust",
        occurred_at=_AT,
        channel="web",
        team="team-a",
        case_ref="ref-1",
        purpose="purpose-x",
        demand_type="failure",
        failure_kind="kind-k",
    )
    second = DemandFact(
        demand_id="d2",
        customer_ref="cust",
        occurred_at=_AT + timedelta(hours=1),
        channel="phone",
        team="team-b",
        case_ref="ref-1",
        purpose="purpose-y",
        demand_type="value",
        failure_kind=None,
    )
    building = _Building("case-1", "cust", "ref-1", "purpose-z", _AT - timedelta(days=1))
    building.status = FULFILLED
    building.fulfilled_at = _AT + timedelta(days=2)
    building.reopened = 3
    building.demands = [first, second]
    building.last_activity_at = _AT + timedelta(days=2, hours=1)
    assert building.freeze() == Case(
        case_id="case-1",
        customer_ref="cust",
        case_ref="ref-1",
        purpose="purpose-x",
        status=FULFILLED,
        started_at=_AT,
        fulfilled_at=_AT + timedelta(days=2),
        reopened=3,
        demand_ids=("d1", "d2"),
        failure_contacts=1,
        channels=("phone", "web"),
        first_channel="web",
        team="team-a",
        last_activity_at=_AT + timedelta(days=2, hours=1),
    )
    # A case with no demand yet starts when first seen and keeps its own purpose.
    empty = _Building("case-2", "cust", None, "purpose-z", _AT)
    assert empty.freeze() == Case(
        case_id="case-2",
        customer_ref="cust",
        case_ref=None,
        purpose="purpose-z",
        status=empty.status,
        started_at=_AT,
        fulfilled_at=None,
        reopened=0,
        demand_ids=(),
        failure_contacts=0,
        channels=(),
        first_channel=None,
        team=None,
        last_activity_at=_AT,
    )
