"""One judgement per demand from three sources: the organisation's rules, the customer's
context (open cases, recently fulfilled purposes) and the text model. Pure: no I/O, no clock.

Precedence, field by field: a rule decides whatever it sets; otherwise the customer's context
decides value/failure (a demand about a purpose that is still open is progress chasing, one
about a purpose fulfilled recently is a repeat); otherwise the model decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from services.classifier.model.text_model import Prediction
from services.classifier.rules import RuleSet
from shared.events.classification import CausedBy, ClassificationMethod, DemandType, FailureKind


@dataclass(frozen=True, slots=True)
class OpenCase:
    ref: str
    purpose: str
    opened_at: datetime
    ref_kind: Literal["case", "demand"] = "case"
    """Whether ``ref`` is a case reference or (with no case system) the first demand's id."""


@dataclass(frozen=True, slots=True)
class RecentDemand:
    demand_id: str
    purpose: str
    occurred_at: datetime
    fulfilled_at: datetime | None = None
    ref_kind: Literal["demand", "case"] = "demand"
    """A fulfilled case known only from case events stands in as its own earlier "demand"."""


class Recent(Protocol):
    """What a judgement reads of a recent demand: a ``RecentDemand``, or the context's own
    entry of one (not copied into a view for every demand judged)."""

    @property
    def demand_id(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def fulfilled_at(self) -> datetime | None: ...
    @property
    def ref_kind(self) -> Literal["demand", "case"]: ...


@dataclass(frozen=True, slots=True)
class CustomerContext:
    open_cases: list[OpenCase] = field(default_factory=list)
    recent_demands: Sequence[Recent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Thresholds:
    review_threshold: float = 0.6
    """Below this confidence a person should look at the judgement."""
    unknown_threshold: float = 0.55
    """Below this demand_type probability we say UNKNOWN rather than guess (binary: > 0.5)."""
    repeat_window: timedelta = timedelta(days=14)
    """A demand for a purpose fulfilled this recently is a repeat: the fulfilment did not hold."""


@dataclass(frozen=True, slots=True)
class Judgement:
    demand_type: DemandType
    failure_kind: str | None
    purpose: str
    confidence: float
    method: ClassificationMethod
    needs_review: bool
    caused_by: CausedBy | None = None


# A repeat where the model hears that the earlier fix did not work is "not done right".
_KINDS_KEPT_ON_REPEAT = {FailureKind.NOT_DONE_RIGHT.value, FailureKind.NOT_DONE.value}


@dataclass(frozen=True, slots=True)
class _ContextFinding:
    failure_kind: str
    caused_by: CausedBy


def _from_context(
    purpose: str, prediction: Prediction, context: CustomerContext, now: datetime, window: timedelta
) -> _ContextFinding | None:
    open_for_purpose = [
        c for c in context.open_cases if c.purpose == purpose and c.opened_at <= now
    ]
    if open_for_purpose:
        earliest = min(open_for_purpose, key=lambda c: c.opened_at)
        return _ContextFinding(
            FailureKind.PROGRESS_CHASING.value, CausedBy(kind=earliest.ref_kind, ref=earliest.ref)
        )
    fulfilled = [
        d
        for d in context.recent_demands
        if d.purpose == purpose
        and d.fulfilled_at is not None
        and now - window <= d.fulfilled_at <= now
    ]
    if fulfilled:
        latest = max(fulfilled, key=lambda d: d.fulfilled_at or d.occurred_at)
        kind = (
            prediction.failure_kind
            if prediction.demand_type == DemandType.FAILURE
            and prediction.failure_kind in _KINDS_KEPT_ON_REPEAT
            else FailureKind.REPEAT.value
        )
        return _ContextFinding(
            kind or FailureKind.REPEAT.value, CausedBy(kind=latest.ref_kind, ref=latest.demand_id)
        )
    return None


def judge(
    text: str,
    prediction: Prediction,
    context: CustomerContext | None,
    *,
    rules: RuleSet,
    now: datetime,
    thresholds: Thresholds | None = None,
) -> Judgement:
    limits = thresholds or Thresholds()
    rule = rules.match(text)

    purpose = prediction.purpose
    purpose_confidence = prediction.purpose_probability
    if rule is not None and rule.purpose is not None:
        purpose, purpose_confidence = rule.purpose, 1.0

    if rule is not None and rule.demand_type is not None:
        demand_type = rule.demand_type
        failure_kind = rule.failure_kind
        if demand_type is DemandType.FAILURE and failure_kind is None:
            failure_kind = prediction.failure_kind or FailureKind.OTHER.value
        confidence = purpose_confidence
        method = ClassificationMethod.RULE
        caused_by = None
        if demand_type is DemandType.FAILURE and context is not None:
            finding = _from_context(purpose, prediction, context, now, limits.repeat_window)
            caused_by = finding.caused_by if finding else None
        return _finish(
            demand_type,
            failure_kind if demand_type is DemandType.FAILURE else None,
            purpose,
            confidence,
            method,
            caused_by,
            limits,
        )

    finding = (
        _from_context(purpose, prediction, context, now, limits.repeat_window) if context else None
    )
    if finding is not None:
        # The failure itself is certain given the purpose, so the purpose's confidence is the
        # weak link.
        return _finish(
            DemandType.FAILURE,
            finding.failure_kind,
            purpose,
            purpose_confidence,
            ClassificationMethod.CONTEXT,
            finding.caused_by,
            limits,
        )

    method = ClassificationMethod.RULE if rule is not None else ClassificationMethod.MODEL
    if prediction.demand_type_probability < limits.unknown_threshold:
        return _finish(
            DemandType.UNKNOWN,
            None,
            purpose,
            min(purpose_confidence, prediction.demand_type_probability),
            method,
            None,
            limits,
        )
    demand_type = DemandType(prediction.demand_type)
    failure_kind = None
    if demand_type is DemandType.FAILURE:
        failure_kind = prediction.failure_kind or FailureKind.OTHER.value
    return _finish(
        demand_type,
        failure_kind,
        purpose,
        min(purpose_confidence, prediction.demand_type_probability),
        method,
        None,
        limits,
    )


def _finish(
    demand_type: DemandType,
    failure_kind: str | None,
    purpose: str,
    confidence: float,
    method: ClassificationMethod,
    caused_by: CausedBy | None,
    limits: Thresholds,
) -> Judgement:
    return Judgement(
        demand_type=demand_type,
        failure_kind=failure_kind,
        purpose=purpose,
        confidence=round(max(0.0, min(1.0, confidence)), 4),
        method=method,
        needs_review=demand_type is DemandType.UNKNOWN or confidence < limits.review_threshold,
        caused_by=caused_by,
    )
