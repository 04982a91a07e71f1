"""A plain demand is validated once, as the event (``_plain_demand``); every other payload,
and any plain one with a fault, goes through ``checked_demand``. The quick path must accept
only what the checked one accepts, the same event, and leave every refusal to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.intake import validation
from services.intake.config import EARLIEST_EVENT_TIME
from services.intake.schemas import DemandSubmission
from services.intake.validation import Admission, InvalidEvent, admit_demand, checked_demand
from shared.events import DemandReceived
from shared.events.demand import MAX_TEXT_LENGTH
from shared.privacy.redaction import Redactor

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
ADMISSION = Admission(
    key_source="demo",
    now=NOW,
    max_future_skew=timedelta(seconds=300),
    redactor=Redactor(),
    earliest=EARLIEST_EVENT_TIME,
)
MISSING = object()

# Each field: values a sender may send, good and bad, near the limits each check has.
VALUES: dict[str, list[Any]] = {
    "id": ["d-1", "a3f9c1-k12-345", "", "bad id!", "07700900123", "jo@example.com", 7, None],
    "occurred_at": [
        "2026-11-27T07:59:00+00:00",
        "2026-11-27T08:04:59+00:00",  # within the skew
        "2026-11-27T09:00:00+00:00",  # in the future
        "1999-12-31T23:59:59+00:00",  # before the earliest
        "2026-11-27T07:59:00",  # no zone
        "yesterday",
        None,
    ],
    "channel": ["phone", "chat", "pigeon", 3],
    "source": ["demo", "other", None, "", "07700 900123", 5],
    "customer_ref": ["C-1", "C-082384-c12", "4111111111111111", "", None],
    "case_ref": ["K-1", None, "+447700900123", "x" * 201],
    "text": [
        "Where is my engineer? Call me on 07700 900123 or jo@example.com",
        "plain words",
        "   ",
        "",
        "x" * MAX_TEXT_LENGTH,
        "x" * (MAX_TEXT_LENGTH + 1),
        "4111 1111 1111 1111 " + "x" * (MAX_TEXT_LENGTH - 19),  # fits only once masked
        "a@b.co " + "y" * (MAX_TEXT_LENGTH - 7),  # outgrows the limit once masked
        12,
        None,
    ],
    "reason_code": [None, "R1", "call 07700 900123", "", "x" * 201],
    "team": [None, "field", "jo@example.com"],
    "attributes": [{}, {"k": "v"}, {"phone": "07700 900123"}, [], None, ""],
    "received_at": ["2026-11-27T07:59:00+00:00"],  # not the sender's to set
    "redactions": [["email"]],
    "schema_version": [1],
    "surprise": [1],
}
CORE = ("id", "occurred_at", "channel", "source", "customer_ref", "case_ref", "text")


GOOD = {name: values[0] for name, values in VALUES.items() if name in CORE}


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        # A good demand with one field changed or left out: each check on its own.
        name = draw(st.sampled_from(list(VALUES)))
        value = draw(st.sampled_from([*VALUES[name], MISSING]))
        payload = dict(GOOD)
        payload.pop(name, None)
        return payload if value is MISSING else payload | {name: value}
    payload = {}
    for name, values in VALUES.items():
        # The core fields mostly good and present, so that accepted demands come up often.
        good = name in CORE and draw(st.integers(0, 3)) > 0
        value = values[0] if good else draw(st.sampled_from([*values, MISSING, MISSING]))
        if name not in CORE and name not in ("reason_code", "team", "attributes"):
            value = value if draw(st.integers(0, 9)) == 0 else MISSING
        if value is not MISSING:
            payload[name] = value
    return payload


def outcome(admit: Any, payload: dict[str, Any]) -> DemandReceived | tuple[Any, ...]:
    try:
        return admit(payload, ADMISSION)  # type: ignore[no-any-return]
    except InvalidEvent as error:
        return ("refused", error.problems, error.source_mismatch)


@given(payloads())
@example(GOOD)
@example(GOOD | {"source": None})
@example(GOOD | {"id": "07700900123"})
@example(GOOD | {"source": "other"})
@settings(max_examples=1500, deadline=None)
def test_the_quick_path_answers_as_the_checked_path_does(payload: dict[str, Any]) -> None:
    assert outcome(admit_demand, payload) == outcome(checked_demand, payload)


@pytest.mark.parametrize(
    "payload",
    [
        GOOD,
        GOOD | {"attributes": {}, "reason_code": None, "source": None},
    ],
)
def test_a_plain_demand_takes_the_quick_path(payload: dict[str, Any]) -> None:
    # Without this, the test above would hold for a quick path that never answers.
    event = validation._plain_demand(payload, ADMISSION)
    assert event is not None
    assert event == checked_demand(payload, ADMISSION)
    assert event.redactions == ["email", "phone"]
    assert event.received_at == NOW


def test_the_quick_path_knows_every_field_of_the_submission() -> None:
    assert frozenset(DemandSubmission.model_fields) == validation._PLAIN_DEMAND_FIELDS


def test_an_admission_works_out_its_latest_date_and_receipt_time_once() -> None:
    paris = timezone(timedelta(hours=1))
    admission = Admission(
        key_source="demo",
        now=NOW.astimezone(paris),
        max_future_skew=timedelta(seconds=300),
        redactor=Redactor(),
        earliest=EARLIEST_EVENT_TIME,
    )
    assert admission.latest == NOW + timedelta(seconds=300)
    assert admission.received_at == NOW
    assert admission.received_at.tzinfo is UTC
    assert admission == Admission(
        key_source="demo",
        now=NOW,
        max_future_skew=timedelta(seconds=300),
        redactor=admission.redactor,
        earliest=EARLIEST_EVENT_TIME,
    )


# Whole minutes: what an ISO 8601 offset (and pydantic parsing one) can say.
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
MOMENTS = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone), st.datetimes(), st.one_of(OFFSETS, st.just(UTC))
)


@given(moment=MOMENTS, earliest=MOMENTS, now=MOMENTS, skew=st.integers(0, 10**6))
@settings(max_examples=2000, deadline=None)
@example(  # the bounds themselves, one microsecond either side, other offsets
    moment=datetime(2000, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    earliest=EARLIEST_EVENT_TIME,
    now=NOW,
    skew=300,
)
@example(
    moment=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    earliest=EARLIEST_EVENT_TIME,
    now=NOW,
    skew=300,
)
@example(moment=NOW + timedelta(seconds=300), earliest=EARLIEST_EVENT_TIME, now=NOW, skew=300)
@example(
    moment=NOW + timedelta(seconds=300, microseconds=1),
    earliest=EARLIEST_EVENT_TIME,
    now=NOW,
    skew=300,
)
def test_the_date_range_as_times_since_the_epoch_is_the_datetimes_comparison(
    moment: datetime, earliest: datetime, now: datetime, skew: int
) -> None:
    try:
        admission = Admission(
            key_source="demo",
            now=now,
            max_future_skew=timedelta(seconds=skew),
            redactor=Redactor(),
            earliest=earliest,
        )
    except OverflowError:  # now + skew past year 9999: no admission to compare with
        return
    expected = admission.earliest <= moment <= admission.latest
    assert admission.in_range(moment) is expected
    # as pydantic parses it (its own tzinfo), which is what the quick path compares
    parsed = DemandReceived.model_validate(
        {
            "id": "d-1",
            "occurred_at": moment.isoformat(),
            "received_at": NOW,
            "channel": "phone",
            "source": "demo",
            "customer_ref": "C-1",
            "text": "where is my engineer",
        }
    ).occurred_at
    assert admission.in_range(parsed) is (admission.earliest <= parsed <= admission.latest)


@pytest.mark.parametrize(
    "key_source", ["demo", "genesys-eu", "07700900123", "jo@example.com", "GB82WEST12345698765432"]
)
def test_the_keys_source_is_judged_as_an_events_source_once_a_request(key_source: str) -> None:
    # The quick path asks the admission whether the key's source is personal data, once;
    # the answer must be the checked path's for a demand naming it, every time asked.
    admission = Admission(
        key_source=key_source,
        now=NOW,
        max_future_skew=timedelta(seconds=300),
        redactor=Redactor(),
        earliest=EARLIEST_EVENT_TIME,
    )

    def judged(admit: Any, payload: dict[str, Any]) -> DemandReceived | tuple[Any, ...]:
        try:
            return admit(payload, admission)  # type: ignore[no-any-return]
        except InvalidEvent as error:
            return ("refused", error.problems, error.source_mismatch)

    for payload in (GOOD | {"source": key_source}, GOOD | {"source": None}) * 2:
        assert judged(admit_demand, payload) == judged(checked_demand, payload)
    refused = judged(admit_demand, GOOD | {"source": key_source})
    assert isinstance(refused, DemandReceived) is (key_source in ("demo", "genesys-eu"))
    assert admission.key_source_refused() is not isinstance(refused, DemandReceived)
