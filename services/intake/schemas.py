"""What senders post and what intake answers. Intake stamps, checks and redacts on the way."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from shared.events.base import Identifier, ShortText, Slug
from shared.events.case import CaseEventType
from shared.events.classification import DemandType
from shared.events.demand import AttributeKey, AttributeValue, Channel, DemandText
from shared.events.labels import LabelReason
from shared.service.problems import FieldProblem

# Identifiers are refused, free text is masked, when they hold personal data.
_OPAQUE = ". An e-mail address, phone or card number here is refused (422)."
_MASKED = "Intake masks personal data (cards, e-mail addresses, phones...) in it."

DEMAND_EXAMPLE: dict[str, JsonValue] = {
    "id": "genesys-7f3a9c",
    "occurred_at": "2026-11-20T09:14:00+00:00",
    "channel": "phone",
    "source": "demo",
    "customer_ref": "C-104233",
    "text": "The engineer was meant to come yesterday and nobody turned up.",
    "team": "field-services",
}


class DemandSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [DEMAND_EXAMPLE]})

    id: Identifier = Field(description="Your event id. A repeat is answered as a duplicate.")
    occurred_at: AwareDatetime = Field(description="When the customer made the demand, with zone.")
    channel: Channel
    source: Identifier | None = Field(
        default=None, description="Your system's name; must be your API key's source."
    )
    customer_ref: Identifier = Field(description=f"Your opaque reference to the customer{_OPAQUE}")
    case_ref: Identifier | None = Field(default=None, description=f"Your case, if any{_OPAQUE}")
    text: DemandText = Field(description="The customer's words, verbatim (intake redacts).")
    reason_code: ShortText | None = Field(default=None, description=_MASKED)
    team: ShortText | None = Field(default=None, description=_MASKED)
    attributes: dict[AttributeKey, AttributeValue] = Field(
        default_factory=dict,
        max_length=50,
        description="Free-form context; intake masks personal data in names and values.",
    )


class CaseEventSubmission(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "crm-case-5521-opened",
                    "case_ref": "CASE-5521",
                    "customer_ref": "C-104233",
                    "type": "opened",
                    "occurred_at": "2026-11-20T09:15:00+00:00",
                    "purpose": "repairs / fix my boiler",
                }
            ]
        },
    )

    id: Identifier = Field(description="Your event id. A repeat is answered as a duplicate.")
    case_ref: Identifier
    customer_ref: Identifier
    type: CaseEventType
    occurred_at: AwareDatetime
    source: Identifier | None = Field(
        default=None, description="Your system's name; must be your API key's source."
    )
    purpose: Slug | None = Field(default=None, description="The customer purpose, if known.")


class LabelSubmission(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "review-88120",
                    "demand_type": "failure",
                    "failure_kind": "progress_chasing",
                    "purpose": "repairs / fix my boiler",
                    "labelled_by": "staff-4471",
                    "reason": "review",
                }
            ]
        },
    )

    id: Identifier = Field(
        description="This label's own event id: the idempotency key, within the demand's source."
    )
    demand_source: Identifier | None = Field(
        default=None,
        description="The source of the demand labelled (a demand is its source and id). A "
        "source's own key may leave it out (its own source) and may name no other (403); a "
        "key with the `sources:all` scope must name it.",
    )
    demand_type: DemandType
    failure_kind: Slug | None = None
    purpose: Slug
    labelled_by: ShortText = Field(description=f"Who: a staff id, not a name{_OPAQUE}")
    labelled_at: AwareDatetime | None = Field(
        default=None, description="When; intake's clock if left out."
    )
    reason: LabelReason = Field(
        default="correction",
        description="'audit' for an item of the metrics service's audit queue (labelled "
        "blind; only these enter the failure share's estimate), 'review' for one of its "
        "review queue, 'correction' otherwise (the default).",
    )
    not_a_demand: bool = Field(
        default=False,
        description="True when the contact asked nothing of the organisation (praise, jokes, "
        "chatter, marketing): then demand_type must be 'unknown' and failure_kind absent. "
        "The failure share is estimated among demands (docs/services/metrics.md).",
    )
    note: str | None = Field(default=None, max_length=2_000)
    text: DemandText | None = Field(default=None, description="The demand's text, if at hand.")


class Accepted(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"] = Field(
        description="'accepted' once the broker acknowledged it; 'duplicate' for a known id."
    )


class ItemResult(BaseModel):
    index: int = Field(description="Position of the item in the request.")
    id: str | None = Field(default=None, description="The item's event id, when it had one.")
    status: Literal["accepted", "duplicate", "rejected"]
    errors: list[FieldProblem] = Field(default_factory=list)


class BatchAnswer(BaseModel):
    """The answer to a batch request: a result per item, in order, and the counts."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]
