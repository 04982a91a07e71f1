"""From a sender's JSON object to the event intake publishes: checked, stamped, redacted.

Pure: no I/O, the clock and the key's source are passed in. Every fault is collected with
its field path, so a sender learns all of them in one answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.intake.schemas import CaseEventSubmission, DemandSubmission, LabelSubmission
from shared.events import CaseEvent, DemandLabelled, DemandReceived
from shared.privacy.redaction import Redactor
from shared.service.problems import FieldProblem, field_problems

M = TypeVar("M", bound=BaseModel)


class InvalidEvent(ValueError):
    def __init__(self, problems: list[FieldProblem], *, source_mismatch: bool = False) -> None:
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))
        self.problems = problems
        # The event names another system than the key's: a 403 for a single event.
        self.source_mismatch = source_mismatch


@dataclass(frozen=True)
class Admission:
    """What an event is judged against: who sent it, when, and how.

    Every date an event carries must lie in ``[earliest, now + max_future_skew]``: a year
    0001 or 0061 is a typo or a default value, not a demand, and downstream consumers
    (metrics' calendar arithmetic) cannot be asked to make sense of it once intake said yes.
    """

    key_source: str
    now: datetime
    max_future_skew: timedelta
    redactor: Redactor
    earliest: datetime


def admit_demand(payload: Any, admission: Admission) -> DemandReceived:
    submission = _validate(DemandSubmission, payload)
    problems = [
        *_source_problems(submission.source, admission),
        *_date_problems("occurred_at", submission.occurred_at, admission),
    ]
    if not submission.text.strip():
        problems.append(FieldProblem(field="text", reason="is blank"))
    _raise_if_any(problems, admission, submission.source)
    redacted = admission.redactor.redact(submission.text)
    fields = submission.model_dump(exclude={"text", "source"})
    return DemandReceived(
        **fields,
        source=admission.key_source,
        text=redacted.text,
        redactions=list(redacted.kinds),
        received_at=admission.now.astimezone(UTC),
    )


def admit_case_event(payload: Any, admission: Admission) -> CaseEvent:
    submission = _validate(CaseEventSubmission, payload)
    problems = [
        *_source_problems(submission.source, admission),
        *_date_problems("occurred_at", submission.occurred_at, admission),
    ]
    _raise_if_any(problems, admission, submission.source)
    return CaseEvent(**submission.model_dump(exclude={"source"}), source=admission.key_source)


def admit_label(payload: Any, demand_id: str, admission: Admission) -> DemandLabelled:
    """A person's label of ``demand_id``; its note and text are redacted like a demand's."""
    submission = _validate(LabelSubmission, payload)
    labelled_at = submission.labelled_at or admission.now
    problems = _date_problems("labelled_at", labelled_at, admission)
    if submission.text is not None and not submission.text.strip():
        problems.append(FieldProblem(field="text", reason="is blank"))
    _raise_if_any(problems, admission, None)
    redact = admission.redactor.redact
    try:
        return DemandLabelled(
            **submission.model_dump(exclude={"labelled_at", "note", "text"}),
            demand_id=demand_id,
            labelled_at=labelled_at,
            note=None if submission.note is None else redact(submission.note).text,
            text=None if submission.text is None else redact(submission.text).text,
        )
    except ValidationError as error:  # the demand id from the path
        raise InvalidEvent(field_problems(error.errors(include_url=False))) from error


def _validate(model: type[M], payload: Any) -> M:
    if not isinstance(payload, Mapping):
        raise InvalidEvent([FieldProblem(field="body", reason="expected a JSON object")])
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise InvalidEvent(field_problems(error.errors(include_url=False))) from error


def _source_problems(source: str | None, admission: Admission) -> list[FieldProblem]:
    if source is None or source == admission.key_source:
        return []
    reason = f"is {source!r} but the API key belongs to {admission.key_source!r}"
    return [FieldProblem(field="source", reason=reason)]


def _date_problems(field: str, moment: datetime, admission: Admission) -> list[FieldProblem]:
    if moment < admission.earliest:
        earliest = admission.earliest.isoformat()
        return [FieldProblem(field=field, reason=f"is before {earliest}, the earliest accepted")]
    if moment > admission.now + admission.max_future_skew:
        ahead = admission.max_future_skew
        reason = f"is in the future (more than {ahead} ahead of intake's clock)"
        return [FieldProblem(field=field, reason=reason)]
    return []


def _raise_if_any(problems: list[FieldProblem], admission: Admission, source: str | None) -> None:
    if problems:
        mismatch = source is not None and source != admission.key_source
        raise InvalidEvent(problems, source_mismatch=mismatch)
