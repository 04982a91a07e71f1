from datetime import UTC, datetime, timedelta

from services.metrics.domain.cases import (
    FULFILLED,
    OPEN,
    CaseEventFact,
    DemandFact,
    LabelFact,
    apply_labels,
    stitch_customer,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def demand(
    demand_id: str,
    at: datetime,
    *,
    purpose: str = "move home",
    demand_type: str = "value",
    channel: str = "phone",
    case_ref: str | None = None,
    caused_by: tuple[str, str] | None = None,
    failure_kind: str | None = None,
) -> DemandFact:
    return DemandFact(
        demand_id=demand_id,
        customer_ref="C-1",
        occurred_at=at,
        channel=channel,
        team="north",
        case_ref=case_ref,
        purpose=purpose,
        demand_type=demand_type,
        failure_kind=failure_kind,
        caused_by_kind=caused_by[0] if caused_by else None,
        caused_by_ref=caused_by[1] if caused_by else None,
    )


def event(
    event_id: str, case_ref: str, kind: str, at: datetime, purpose: str | None = None
) -> CaseEventFact:
    return CaseEventFact(event_id, case_ref, "C-1", kind, at, purpose)


def test_end_to_end_runs_from_the_first_demand_across_contacts_and_channels() -> None:
    # Demand by phone at 09:00, chased by email the next day, fulfilled two days after the
    # first demand at 13:00: 2 days 4 hours = 187 200 s, 2 contacts, 1 failure, not one-stop.
    result = stitch_customer(
        "C-1",
        [
            demand("d1", T0, case_ref="K1"),
            demand(
                "d2",
                T0 + DAY,
                demand_type="failure",
                channel="email",
                failure_kind="progress_chasing",
            ),
        ],
        [event("e1", "K1", "fulfilled", T0 + 2 * DAY + 4 * HOUR)],
    )

    (case,) = result.cases
    assert case.end_to_end_seconds == 187_200
    assert case.contacts == 2
    assert case.failure_contacts == 1
    assert case.channels == ("email", "phone")
    assert case.one_stop is False
    assert result.case_of_demand == {"d1": "K1", "d2": "K1"}


def test_a_reopened_case_keeps_counting_from_the_first_demand() -> None:
    # Fulfilled after 1 day, reopened, fulfilled again on day 5: 5 days, not 1 and not 4.
    result = stitch_customer(
        "C-1",
        [demand("d1", T0, case_ref="K1")],
        [
            event("e1", "K1", "fulfilled", T0 + DAY),
            event("e2", "K1", "reopened", T0 + 2 * DAY),
            event("e3", "K1", "fulfilled", T0 + 5 * DAY),
        ],
    )

    (case,) = result.cases
    assert case.end_to_end_seconds == 5 * 86_400
    assert case.reopened == 1
    assert case.one_stop is False  # one contact, but the purpose was not met the first time


def test_a_reopened_case_not_yet_fulfilled_again_is_open_without_a_time() -> None:
    result = stitch_customer(
        "C-1",
        [demand("d1", T0, case_ref="K1")],
        [event("e1", "K1", "fulfilled", T0 + DAY), event("e2", "K1", "reopened", T0 + 2 * DAY)],
    )

    (case,) = result.cases
    assert case.status == OPEN
    assert case.end_to_end_seconds is None


def test_a_failure_demand_joins_the_case_it_was_caused_by() -> None:
    # d2 is about billing ("I did not understand your letter") but was caused by the
    # move-home demand d1: it joins d1's case, and its cause is that case's purpose.
    result = stitch_customer(
        "C-1",
        [
            demand("d1", T0),
            demand(
                "d2",
                T0 + HOUR,
                purpose="billing",
                demand_type="failure",
                caused_by=("demand", "d1"),
                failure_kind="not_understood",
            ),
        ],
        [],
    )

    (case,) = result.cases
    assert case.case_id == "auto-d1"
    assert case.contacts == 2
    assert result.case_of_demand["d2"] == "auto-d1"
    assert result.cause_purpose_of_demand == {"d2": "move home"}


def test_a_failure_demand_caused_by_a_case_joins_that_case_even_if_fulfilled() -> None:
    result = stitch_customer(
        "C-1",
        [
            demand("d1", T0, case_ref="K1"),
            demand("d2", T0 + 3 * DAY, demand_type="failure", caused_by=("case", "K1")),
        ],
        [event("e1", "K1", "fulfilled", T0 + DAY)],
    )

    (case,) = result.cases
    assert case.demand_ids == ("d1", "d2")
    assert case.status == FULFILLED


def test_a_demand_without_a_ref_joins_the_open_case_for_the_same_purpose() -> None:
    result = stitch_customer(
        "C-1",
        [
            demand("d1", T0),
            demand("d2", T0 + HOUR, purpose="billing"),
            demand("d3", T0 + 2 * HOUR),  # same purpose as d1, d1's case still open
        ],
        [],
    )

    assert {c.case_id: c.demand_ids for c in result.cases} == {
        "auto-d1": ("d1", "d3"),
        "auto-d2": ("d2",),
    }


def test_a_case_event_naming_a_new_ref_adopts_the_open_case_of_its_purpose() -> None:
    # The demand came without a case ref; the CRM later names the case and fulfils it.
    result = stitch_customer(
        "C-1",
        [demand("d1", T0)],
        [
            event("e1", "K9", "opened", T0 + HOUR, "move home"),
            event("e2", "K9", "fulfilled", T0 + 3 * HOUR, "move home"),
        ],
    )

    (case,) = result.cases
    assert case.case_ref == "K9"
    assert case.end_to_end_seconds == 3 * 3600
    assert case.one_stop is True


def test_the_result_does_not_depend_on_arrival_order() -> None:
    demands = [demand("d1", T0, case_ref="K1"), demand("d2", T0 + DAY, case_ref="K1")]
    events = [event("e1", "K1", "opened", T0 - HOUR), event("e2", "K1", "fulfilled", T0 + 2 * DAY)]

    forwards = stitch_customer("C-1", demands, events)
    backwards = stitch_customer("C-1", demands[::-1], events[::-1])

    assert forwards == backwards
    assert forwards.cases[0].end_to_end_seconds == 2 * 86_400  # from the demand, not "opened"


def test_a_case_with_only_case_events_is_kept_but_not_measured() -> None:
    result = stitch_customer("C-1", [], [event("e1", "K1", "fulfilled", T0, "move home")])

    (case,) = result.cases
    assert case.measured is False
    assert case.end_to_end_seconds is None


def test_the_latest_label_wins_whatever_order_labels_come_in() -> None:
    d1 = demand("d1", T0, demand_type="value")
    first = LabelFact("l1", "d1", "failure", "repeat", "billing", T0 + HOUR)
    second = LabelFact("l2", "d1", "value", "repeat", "move home", T0 + 2 * HOUR)

    (labelled,) = apply_labels([d1], [second, first])

    assert labelled.demand_type == "value"
    assert labelled.purpose == "move home"
    assert labelled.failure_kind is None  # a value demand has no failure kind
    assert labelled.labelled is True
