"""From a sender's JSON object to the event intake publishes: checked, stamped, redacted.

Pure: no I/O, the clock and the key's source are passed in. Every fault is collected with
its field path, so a sender learns all of them in one answer.

Personal data (docs/services/intake.md, "personal data"): free text (a demand's text,
reason code, team, attribute keys and values; a label's note and text) is masked; a field
that names something (ids, references, ``source``, ``labelled_by``, the ``purpose`` and
``failure_kind`` categories) is refused with a 422 naming the field and the kind of data,
never the value. A value is never echoed in a problem either: pydantic's messages are used
without its ``input``, and ``masked_problems`` masks what a field path may carry (a key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.intake.schemas import CaseEventSubmission, DemandSubmission, LabelSubmission
from shared.events import CaseEvent, DemandLabelled, DemandReceived, Event
from shared.events.demand import MAX_TEXT_LENGTH
from shared.events.labels import not_a_demand_conflicts
from shared.privacy import Redactor, personal_data_kind, refusal_reason
from shared.service.problems import FieldProblem, field_problems

M = TypeVar("M", bound=BaseModel)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
E = TypeVar("E", bound=Event)

# Fields that name something: a mask would make them useless (and categories cannot hold
# one), so personal data in them is refused rather than masked.
DEMAND_IDENTIFIERS = ("id", "source", "customer_ref", "case_ref")
CASE_EVENT_IDENTIFIERS = ("id", "source", "customer_ref", "case_ref", "purpose")
LABEL_IDENTIFIERS = ("id", "demand_source", "labelled_by", "purpose", "failure_kind")


class InvalidEvent(ValueError):
    def __init__(self, problems: list[FieldProblem], *, source_mismatch: bool = False) -> None:
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))
        self.problems = problems
        # The event names another system than the key's: a 403 for a single event.
        self.source_mismatch = source_mismatch


# Slotted, not frozen: one is made per request, and a frozen dataclass sets each of its
# eight fields through object.__setattr__ (2.2 against ~1 µs a request, measured).
# Nothing changes one once made.
@dataclass(slots=True)
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
    # The key may label every source's demands (``sources:all``), not only its own.
    organisation_wide: bool = False
    # Worked out once per request, not per event: the latest date accepted and the
    # ``received_at`` stamped on demands; the range's bounds as times since the epoch.
    latest: datetime = field(init=False, repr=False, compare=False)
    received_at: datetime = field(init=False, repr=False, compare=False)
    earliest_since: timedelta = field(init=False, repr=False, compare=False)
    latest_since: timedelta = field(init=False, repr=False, compare=False)
    # Whether the key's source is personal data, once asked (key_source_refused).
    _key_source_refused: bool | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.latest = self.now + self.max_future_skew
        self.received_at = self.now.astimezone(UTC)
        self.earliest_since = self.earliest - EPOCH
        self.latest_since = self.latest - EPOCH

    def in_range(self, moment: datetime) -> bool:
        """``earliest <= moment <= latest`` for an aware ``moment``, compared as times since
        the epoch: an aware datetime's comparison and subtraction both take its UTC offset
        off first, exactly, so the answer is the same. Each comparison with a datetime
        pydantic parsed asks its tzinfo (pydantic's TzInfo, through a Python call) for the
        offset again; one subtraction asks once (measured: 0.75 -> 0.48 µs)."""
        return self.earliest_since <= moment - EPOCH <= self.latest_since

    def key_source_refused(self) -> bool:
        """Whether an event's ``source`` that is the key's own would be refused as personal
        data (``identifier_problems``): asked once a request, not for each event of a
        batch, whose items name the key's source (two searches an event, measured)."""
        refused = self._key_source_refused
        if refused is None:
            refused = self._key_source_refused = personal_data_kind(self.key_source) is not None
        return refused


def admit_demand(payload: Any, admission: Admission) -> DemandReceived:
    if type(payload) is dict and payload.keys() <= _PLAIN_DEMAND_FIELDS:
        event = _plain_demand(payload, admission)
        if event is not None:
            return event
    return checked_demand(payload, admission)


# What a plain demand may hold: the submission's fields (a field added to it later takes
# checked_demand until added here).
_PLAIN_DEMAND_FIELDS = frozenset(
    {"id", "occurred_at", "channel", "source", "customer_ref", "case_ref", "text"}
    | {"reason_code", "team", "attributes"}
)


def _plain_demand(payload: dict[str, Any], admission: Admission) -> DemandReceived | None:
    """A demand whose only free text is its text, of the key's source or none, validated
    once, as the event: the submission's fields are the event's, of the same types, and
    the text is checked here as the submission checks it (a string of 1 to
    MAX_TEXT_LENGTH characters, not blank) before it is masked.

    None if anything is not so, and for any fault at all: ``checked_demand`` then judges
    the payload from the start and names every problem as it always has. So this path only
    ever accepts what ``checked_demand`` accepts, the same event; it saves validating the
    submission and copying its fields (2-3 µs a demand, measured).
    """
    text = payload.get("text")
    source = payload.get("source")
    if (
        type(text) is not str
        or not 0 < len(text) <= MAX_TEXT_LENGTH
        or not text.strip()
        or (source is not None and source != admission.key_source)
        or payload.get("reason_code") is not None
        or payload.get("team") is not None
        or payload.get("attributes")
        # DEMAND_IDENTIFIERS' problems: the source, when sent, is the key's (above)
        or (source is not None and admission.key_source_refused())
        or identifier_problems(payload, _PLAIN_IDENTIFIERS)
    ):
        return None
    masked = admission.redactor.redact(text)
    fields = payload | {
        "source": admission.key_source,
        "text": masked.text,
        "redactions": list(masked.kinds),  # sorted, each once
        "received_at": admission.received_at,
    }
    try:
        # The model's validator itself: model_validate only passes its options on to it
        # (0.3 µs an event in that Python call, callgrind).
        event: DemandReceived = _VALIDATE_DEMAND(fields)
    except ValidationError:
        return None
    if not admission.in_range(event.occurred_at):
        return None
    return event


def checked_demand(payload: Any, admission: Admission) -> DemandReceived:
    """The demand ``payload`` describes, or InvalidEvent naming every problem in it."""
    submission = _validate(DemandSubmission, payload, DEMAND_IDENTIFIERS)
    source, text = submission.source, submission.text
    if (
        (source is not None and source != admission.key_source)
        or not admission.earliest <= submission.occurred_at <= admission.latest
        or not text.strip()
    ):
        problems = [
            *_source_problems(source, admission),
            *_date_problems("occurred_at", submission.occurred_at, admission),
        ]
        if not text.strip():
            problems.append(FieldProblem(field="text", reason="is blank"))
        _raise_if_any(problems, admission, source)
    # The submission's other fields as they are (what model_dump would copy, without its
    # walk of the model: a µs an event), the free text masked.
    fields = {name: value for name, value in submission.__dict__.items() if name not in _MASKED}
    if submission.reason_code is None and submission.team is None and not submission.attributes:
        # Only the text to mask, the common case: its kinds are the redactor's, sorted.
        masked = admission.redactor.redact(text)
        return _built(
            DemandReceived,
            **fields,
            source=admission.key_source,
            text=masked.text,
            redactions=list(masked.kinds),
            received_at=admission.received_at,
        )
    masking = _Masking(admission.redactor)
    return _built(
        DemandReceived,
        **fields,
        source=admission.key_source,
        text=masking.text(text),
        reason_code=masking.optional(submission.reason_code),
        team=masking.optional(submission.team),
        attributes=masking.attributes(submission.attributes),
        redactions=masking.kinds(),
        received_at=admission.received_at,
    )


# What model_validate calls, without its option handling; bound at import, so a later
# DemandReceived.model_rebuild(force=True) would not reach it (nothing rebuilds it).
_VALIDATE_DEMAND = DemandReceived.__pydantic_validator__.validate_python

# DEMAND_IDENTIFIERS but the source, which _plain_demand asks its Admission about.
_PLAIN_IDENTIFIERS = tuple(name for name in DEMAND_IDENTIFIERS if name != "source")


_NOT_A_DEMAND_REASONS = {
    "demand_type": "must be 'unknown' when not_a_demand is true (not a demand has no type)",
    "failure_kind": "must be absent when not_a_demand is true (not a demand has no type)",
}

# A demand's fields that admission replaces: masked free text, and the key's source.
_MASKED = frozenset({"text", "source", "reason_code", "team", "attributes"})


def admit_case_event(payload: Any, admission: Admission) -> CaseEvent:
    submission = _validate(CaseEventSubmission, payload, CASE_EVENT_IDENTIFIERS)
    problems = [
        *_source_problems(submission.source, admission),
        *_date_problems("occurred_at", submission.occurred_at, admission),
    ]
    _raise_if_any(problems, admission, submission.source)
    fields = submission.model_dump(exclude={"source"})
    return _built(CaseEvent, **fields, source=admission.key_source)


def admit_label(payload: Any, demand_id: str, admission: Admission) -> DemandLabelled:
    """A person's label of ``demand_id``; its note and text are redacted like a demand's."""
    refused = identifier_problems({"demand_id": demand_id}, ("demand_id",))
    try:
        submission = _validate(LabelSubmission, payload, LABEL_IDENTIFIERS)
    except InvalidEvent as error:
        raise InvalidEvent([*refused, *error.problems]) from error
    labelled_at = submission.labelled_at or admission.now
    demand_source = submission.demand_source
    problems = [*refused, *_date_problems("labelled_at", labelled_at, admission)]
    if admission.organisation_wide:
        if demand_source is None:
            reason = "is required: this key labels every source's demands, so name the one"
            problems.append(FieldProblem(field="demand_source", reason=reason))
    else:
        # A source's key labels its own demands only. Naming another source is refused
        # whether or not that source has such a demand: the answer reveals nothing.
        problems += _source_problems(demand_source, admission, field="demand_source")
    if submission.text is not None and not submission.text.strip():
        problems.append(FieldProblem(field="text", reason="is blank"))
    # Named on the field that contradicts "not a demand", rather than as the event model's
    # error about the whole request.
    problems += [
        FieldProblem(field=name, reason=_NOT_A_DEMAND_REASONS[name])
        for name in not_a_demand_conflicts(
            submission.not_a_demand, submission.demand_type, submission.failure_kind
        )
    ]
    _raise_if_any(problems, admission, None if admission.organisation_wide else demand_source)
    if not admission.organisation_wide:
        demand_source = admission.key_source
    masking = _Masking(admission.redactor)
    return _built(  # the demand id from the path is checked here too
        DemandLabelled,
        **submission.model_dump(exclude={"labelled_at", "note", "text", "demand_source"}),
        demand_id=demand_id,
        demand_source=demand_source,
        labelled_at=labelled_at,
        note=masking.optional(submission.note),
        text=masking.optional(submission.text),
    )


def identifier_problems(payload: Mapping[str, Any], names: Iterable[str]) -> list[FieldProblem]:
    """A problem for each of ``names`` whose value is personal data; the value is not in it."""
    problems = []
    for name in names:
        value = payload.get(name)
        kind = personal_data_kind(value) if isinstance(value, str) else None
        if kind is not None:
            problems.append(FieldProblem(field=name, reason=refusal_reason(kind)))
    return problems


def masked_problems(problems: Iterable[FieldProblem], redactor: Redactor) -> list[FieldProblem]:
    """Problems safe to answer and to write down: personal data in a path (an attribute's
    or an unknown field's name) or a reason is masked like free text."""
    return [
        FieldProblem(field=redactor.redact(p.field).text, reason=redactor.redact(p.reason).text)
        for p in problems
    ]


class _Masking:
    """Masks an event's free-text fields with one redactor, noting the kinds it masked."""

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor.redact
        self._kinds: set[str] = set()

    def text(self, value: str) -> str:
        result = self._redact(value)
        self._kinds.update(result.kinds)
        return result.text

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def attributes(self, attributes: Mapping[str, str]) -> dict[str, str]:
        masked: dict[str, str] = {}
        for key, value in attributes.items():
            masked_key = self.text(key)
            if masked_key in masked:
                # Two names alike once masked: keeping one would silently drop the other.
                reason = "two keys are the same once personal data in them is masked"
                raise InvalidEvent([FieldProblem(field="attributes", reason=reason)])
            masked[masked_key] = self.text(value)
        return masked

    def kinds(self) -> list[str]:
        return sorted(self._kinds)


def _built(event_type: type[E], **fields: Any) -> E:
    """The event, or InvalidEvent: a masked value can outgrow its field's limit ("[phone]"
    is longer than "+1234567"), and a path parameter is checked only here."""
    try:
        # model_validate of the dict, not event_type(**fields): the same validation, 0.7 µs
        # less an event (measured).
        return event_type.model_validate(fields)
    except ValidationError as error:
        raise InvalidEvent(_problems_of(error)) from None


def _validate(model: type[M], payload: Any, identifiers: tuple[str, ...]) -> M:
    # JSON objects are dicts: the exact type check is far cheaper than the ABC's.
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise InvalidEvent([FieldProblem(field="body", reason="expected a JSON object")])
    refused = identifier_problems(payload, identifiers)
    try:
        submission = model.model_validate(payload)
    except ValidationError as error:
        named = {problem.field for problem in refused}
        others = [p for p in _problems_of(error) if p.field not in named]
        raise InvalidEvent([*refused, *others]) from None
    if refused:
        raise InvalidEvent(refused)
    return submission


def _problems_of(error: ValidationError) -> list[FieldProblem]:
    # ``from None`` at the callers: the error's text holds the input, which is not logged.
    return field_problems(error.errors(include_url=False, include_input=False))


def _source_problems(
    source: str | None, admission: Admission, *, field: str = "source"
) -> list[FieldProblem]:
    if source is None or source == admission.key_source:
        return []
    reason = f"is {source!r} but the API key belongs to {admission.key_source!r}"
    return [FieldProblem(field=field, reason=reason)]


def _date_problems(field: str, moment: datetime, admission: Admission) -> list[FieldProblem]:
    if moment < admission.earliest:
        earliest = admission.earliest.isoformat()
        return [FieldProblem(field=field, reason=f"is before {earliest}, the earliest accepted")]
    if moment > admission.latest:
        ahead = admission.max_future_skew
        reason = f"is in the future (more than {ahead} ahead of intake's clock)"
        return [FieldProblem(field=field, reason=reason)]
    return []


def _raise_if_any(problems: list[FieldProblem], admission: Admission, source: str | None) -> None:
    if problems:
        mismatch = source is not None and source != admission.key_source
        raise InvalidEvent(problems, source_mismatch=mismatch)
