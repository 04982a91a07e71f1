"""The write path's row readers (_demand_of, _case_event_of, _read_stored_cases for tail_state's
and closing_state's reads) and the stitcher's freeze and _copied build their dataclasses by
position (a class called with keywords costs a dict a call): each equals the keyword form,
field by field, for values that differ in every field, so a swapped position fails; and
each class built by position keeps its field order (test_positional_field_order)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.metrics.db.write_path import (
    _CASE_COLUMNS,
    _CASES_STORED_AT,
    _TAIL_CASE_COLUMNS,
    _TAIL_STORED_AT,
    _case_event_of,
    _demand_of,
    _read_stored_cases,
)
from services.metrics.domain.cases import (
    FULFILLED,
    Case,
    CaseEventFact,
    DemandFact,
    StoredCase,
    _Building,
    _copied,
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


# A stored case's columns by name, each a value of its own (contacts and failure_contacts,
# case_ref and purpose differ), for either read's column list.
_STORED: dict[str, Any] = {
    "source": "src",
    "customer_ref": "cust",
    "case_id": "case-1",
    "case_ref": "ref-1",
    "purpose": "purpose-x",
    "status": FULFILLED,
    "measured": True,
    "started_at": "2026-03-01 00:00:00",
    "fulfilled_at": "2026-03-02 00:00:00",
    "end_to_end_seconds": 86400.0,
    "reopened": 1,
    "contacts": 5,
    "failure_contacts": 2,
    "channels": "phone,web",
    "first_channel": "web",
    "team": "team-a",
    "one_stop": False,
    "last_activity_at": "2026-03-04 05:06:07.890123",
}
_STORED_CASE = StoredCase(
    case_id="case-1",
    case_ref="ref-1",
    purpose="purpose-x",
    status=FULFILLED,
    contacts=5,
    failure_contacts=2,
    channels=("phone", "web"),
    last_activity_at=_AT,
)


@pytest.mark.parametrize(
    ("columns", "at"),
    [(_TAIL_CASE_COLUMNS, _TAIL_STORED_AT), (_CASE_COLUMNS, _CASES_STORED_AT)],
    ids=["tail_state", "closing_state"],
)
def test_a_stored_case_row_reads_as_the_keyword_form(
    columns: tuple[str, ...], at: tuple[int, ...]
) -> None:
    # The rows as the read returns them (its SQL selects ``columns`` in order); the second
    # has no channel stored, which reads as none.
    row = tuple(_STORED[c] for c in columns)
    bare = tuple("" if c == "channels" else _STORED[c] for c in columns)
    cases: dict[tuple[str, str], list[StoredCase]] = {("src", "cust"): []}
    whole: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    _read_stored_cases([row, bare], at, _read_time, cases, whole)
    bare_case = dataclasses.replace(_STORED_CASE, channels=())
    assert cases == {("src", "cust"): [_STORED_CASE, bare_case]}
    assert whole == {("src", "cust", "case-1"): bare}  # the last row of the key


def test_a_copied_stored_case_is_the_keyword_form() -> None:
    later = _AT + timedelta(hours=1)
    assert _copied(_STORED_CASE, "open", later) == StoredCase(
        case_id="case-1",
        case_ref="ref-1",
        purpose="purpose-x",
        status="open",
        contacts=5,
        failure_contacts=2,
        channels=("phone", "web"),
        last_activity_at=later,
    )


# Every class built by position and its fields in order, as the positional calls pass them.
_POSITIONAL: dict[type, tuple[list[str], str]] = {
    DemandFact: (
        [
            "demand_id",
            "customer_ref",
            "occurred_at",
            "channel",
            "team",
            "case_ref",
            "purpose",
            "demand_type",
            "failure_kind",
            "caused_by_kind",
            "caused_by_ref",
            "labelled",
        ],
        "services/metrics/db/write_path.py _demand_of",
    ),
    CaseEventFact: (
        ["event_id", "case_ref", "customer_ref", "type", "occurred_at", "purpose"],
        "services/metrics/db/write_path.py _case_event_of",
    ),
    StoredCase: (
        [
            "case_id",
            "case_ref",
            "purpose",
            "status",
            "contacts",
            "failure_contacts",
            "channels",
            "last_activity_at",
        ],
        "services/metrics/db/write_path.py _read_stored_cases, "
        "services/metrics/domain/cases.py _copied",
    ),
    Case: (
        [
            "case_id",
            "customer_ref",
            "case_ref",
            "purpose",
            "status",
            "started_at",
            "fulfilled_at",
            "reopened",
            "demand_ids",
            "failure_contacts",
            "channels",
            "first_channel",
            "team",
            "last_activity_at",
        ],
        "services/metrics/domain/cases.py _Building.freeze",
    ),
}


@pytest.mark.parametrize("cls", list(_POSITIONAL), ids=lambda cls: cls.__name__)
def test_positional_field_order(cls: type) -> None:
    names, sites = _POSITIONAL[cls]
    assert [f.name for f in dataclasses.fields(cls)] == names, (
        f"{cls.__name__}'s fields changed: it is built by position at {sites}; reorder "
        "those calls' arguments (each names its field in a comment) to match, then this list"
    )
