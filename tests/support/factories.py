"""One factory per event of shared/events/ and per HTTP body intake accepts.

Every factory takes keyword overrides and fills the rest with valid defaults; ids (and
customer and case references) are unique per call, timestamps are "now". Events are built
with ``model_validate``, so an invalid override raises pydantic's ``ValidationError`` just
as the event would; a test of validation can start from a factory.

Bodies are plain JSON-ready dicts: a ``datetime`` override is written as ISO 8601, and an
override of ``...`` leaves the field out of the body.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    CaseEvent,
    CaseEventType,
    CausedBy,
    Channel,
    ClassificationMethod,
    DemandClassified,
    DemandLabelled,
    DemandReceived,
    DemandType,
    PurposeMetrics,
    SpecialCauseSignalled,
    SystemChanged,
)
from shared.events.signals import signal_id

_POINTS = itertools.count()
DEMO_SOURCE = "demo"  # the source of the tests' demo API key
TEXT = "Where is my engineer? He was meant to come yesterday."


def unique(prefix: str) -> str:
    # A whole UUID: intake never reads one as personal data, while 12 hex digits are all
    # decimal one time in 280 and then may read as a phone number, which intake refuses.
    return f"{prefix}-{uuid.uuid4()}"


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------


def demand_received(**overrides: Any) -> DemandReceived:
    """A phone demand from a customer of its own; ``received_at`` defaults to ``occurred_at``."""
    occurred_at = overrides.get("occurred_at", _now())
    fields: dict[str, Any] = {
        "id": unique("d"),
        "occurred_at": occurred_at,
        "received_at": occurred_at,
        "channel": Channel.PHONE,
        "source": "test",
        "customer_ref": unique("C"),
        "text": TEXT,
    }
    return DemandReceived.model_validate(fields | overrides)


_DEMAND_FIELDS = frozenset(DemandReceived.model_fields) - {"schema_version"}


def demand_classified(
    *, demand: DemandReceived | None = None, **overrides: Any
) -> DemandClassified:
    """A value demand, classified by rule; ``classified_at`` defaults to when it occurred.

    Overrides naming a field of DemandReceived (``id``, ``customer_ref``, ``occurred_at``,
    ...) go to the demand (unless ``demand`` is given whole); the rest to the classification.
    """
    demand_fields = {k: v for k, v in overrides.items() if k in _DEMAND_FIELDS}
    if demand is None:
        demand = demand_received(**demand_fields)
    elif demand_fields:
        raise TypeError(f"give the demand whole or its fields, not both: {sorted(demand_fields)}")
    fields: dict[str, Any] = {
        "demand": demand,
        "demand_type": DemandType.VALUE,
        "purpose": "billing",
        "confidence": 0.9,
        "method": ClassificationMethod.RULE,
        "model_version": "rules-1",
        "classified_at": demand.occurred_at,
    }
    rest = {k: v for k, v in overrides.items() if k not in _DEMAND_FIELDS}
    return DemandClassified.model_validate(fields | rest)


def varied_demands(
    count: int, *, customers: int, start: datetime, case_refs: bool = False
) -> list[DemandClassified]:
    """``count`` demands an hour apart from ``start`` over ``customers`` customers (demand n
    is customer ``C-{n % customers}``'s), varied the same way every time: both channels, a
    team or none, two purposes, every third a repeat failure, each after the first round
    caused by the same customer's demand before, handling times on every other; with
    ``case_refs``, three in four belong to their customer's case ``K-...``."""
    return [
        demand_classified(
            id=f"d-{n}",
            customer_ref=f"C-{n % customers}",
            case_ref=f"K-{n % customers}" if case_refs and n % 4 else None,
            occurred_at=start + timedelta(hours=n),
            channel=Channel.PHONE if n % 2 else Channel.EMAIL,
            team="north" if n % 3 else None,
            purpose="billing" if n % 4 else "move home",
            demand_type=DemandType.FAILURE if n % 3 == 1 else DemandType.VALUE,
            failure_kind="repeat" if n % 3 == 1 else None,
            caused_by=CausedBy(kind="demand", ref=f"d-{n - customers}") if n >= customers else None,
            attributes={"handling_seconds": f"{100 + n}.25"} if n % 2 else {},
        )
        for n in range(count)
    ]


def case_event(**overrides: Any) -> CaseEvent:
    """A case of its own, opened now, for a customer of its own."""
    fields: dict[str, Any] = {
        "id": unique("e"),
        "case_ref": unique("K"),
        "customer_ref": unique("C"),
        "type": CaseEventType.OPENED,
        "occurred_at": _now(),
        "source": "test",  # as intake always stamps it, and as demand_received's
    }
    return CaseEvent.model_validate(fields | overrides)


def demand_labelled(**overrides: Any) -> DemandLabelled:
    """A person's word that a demand of its own is value demand for billing."""
    fields: dict[str, Any] = {
        "id": unique("l"),
        "demand_id": unique("d"),
        "demand_source": "test",  # as intake always sets it, and as demand_received's
        "demand_type": DemandType.VALUE,
        "purpose": "billing",
        "labelled_by": "staff-1",
        "labelled_at": _now(),
    }
    return DemandLabelled.model_validate(fields | overrides)


def purpose_metrics(**overrides: Any) -> PurposeMetrics:
    """Today's measures of billing: four demands, one of them failure demand."""
    now = _now()
    fields: dict[str, Any] = {
        "purpose": "billing",
        "window_start": now.replace(hour=0, minute=0, second=0, microsecond=0),
        "window_end": now,
        "volume": 4,
        "value_count": 3,
        "failure_count": 1,
        "failure_ratio": 0.25,
        "computed_at": now,
    }
    return PurposeMetrics.model_validate(fields | overrides)


def special_cause_signalled(**overrides: Any) -> SpecialCauseSignalled:
    """A point of billing's failure demand per day beyond its upper limit, raised now; a
    point of its own (so a signal of its own) each call."""
    at = _now().replace(microsecond=0) - timedelta(days=1, seconds=next(_POINTS))
    fields: dict[str, Any] = {
        "purpose": "billing",
        "owner": "billing",
        "measure": "failure_per_day",
        "rule": "beyond_limit",
        "at": at,
        "value": 41.0,
        "centre_line": 18.5,
        "lower_natural_process_limit": 4.2,
        "upper_natural_process_limit": 32.8,
        "raised_at": _now(),
    } | overrides
    what = {key: fields[key] for key in ("purpose", "measure", "rule", "at")}
    fields.setdefault("signal_id", signal_id(**what))
    return SpecialCauseSignalled.model_validate(fields)


def system_changed(**overrides: Any) -> SystemChanged:
    """A reviewer's word that billing's system changed a day ago, recorded now."""
    now = _now()
    fields: dict[str, Any] = {
        "id": unique("change"),
        "purpose": "billing",
        "changed_at": now - timedelta(days=1),
        "note": "Bills rewritten in plain English.",
        "recorded_at": now,
        "recorded_by": "rey",
    }
    return SystemChanged.model_validate(fields | overrides)


# ---------------------------------------------------------------------------------------------
# HTTP bodies intake accepts
# ---------------------------------------------------------------------------------------------


def _body(fields: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = fields | dict(overrides)
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in merged.items()
        if value is not ...
    }


def demand_body(**overrides: Any) -> dict[str, Any]:
    """``POST /v1/demands`` (and an item of ``:batch``, a row of ``demandscope import``)."""
    fields: dict[str, Any] = {
        "id": unique("d"),
        "occurred_at": _now(),
        "channel": "phone",
        "source": DEMO_SOURCE,
        "customer_ref": unique("C"),
        "text": TEXT,
    }
    return _body(fields, overrides)


def case_event_body(**overrides: Any) -> dict[str, Any]:
    """``POST /v1/case-events``: a case of its own, opened now."""
    fields: dict[str, Any] = {
        "id": unique("e"),
        "case_ref": unique("K"),
        "customer_ref": unique("C"),
        "type": "opened",
        "occurred_at": _now(),
        "source": DEMO_SOURCE,
    }
    return _body(fields, overrides)


def label_body(**overrides: Any) -> dict[str, Any]:
    """``POST /v1/demands/{demand_id}/labels``: the demand is value demand for billing."""
    fields: dict[str, Any] = {
        "id": unique("l"),
        "demand_type": "value",
        "purpose": "billing",
        "labelled_by": "staff-1",
    }
    return _body(fields, overrides)


def cloudevent_body(**overrides: Any) -> dict[str, Any]:
    """A demand as a structured-mode CloudEvent: the envelope carries the id, source and
    time, ``data`` the rest of a demand body."""
    fields: dict[str, Any] = {
        "specversion": "1.0",
        "id": unique("ce"),
        "source": DEMO_SOURCE,
        "type": DemandReceived.CE_TYPE,
        "time": _now(),
        "data": demand_body(id=..., source=..., occurred_at=...),
    }
    return _body(fields, overrides)
