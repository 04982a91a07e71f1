"""A person's confirmation or correction of a classification, and why it was made."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, model_validator

from shared.events.base import Event, Identifier, ShortText, Slug
from shared.events.classification import DemandType
from shared.events.demand import DemandText

# Why a person labelled a demand. Only "audit" labels measure the model (metrics pairs them
# with the demand's first machine label, docs/services/metrics.md); all three teach it.
LabelReason = Literal["review", "audit", "correction"]


def not_a_demand_conflicts(
    not_a_demand: bool, demand_type: DemandType, failure_kind: str | None
) -> list[str]:
    """The fields that contradict a "not a demand" answer: it is an answer of its own, so a
    type or a failure kind beside it would be a second, contradicting one. The one rule,
    for the event's validator and for intake's per-field errors."""
    if not not_a_demand:
        return []
    conflicting = []
    if demand_type is not DemandType.UNKNOWN:
        conflicting.append("demand_type")
    if failure_kind is not None:
        conflicting.append("failure_kind")
    return conflicting


class DemandLabelled(Event):
    """Frontline staff's word on a demand. The latest label for a demand wins.

    ``reason`` was added within version 1: optional, so every label already on the topic
    reads as a correction. A reader built before it refuses labels that carry it (events
    forbid unknown fields): deploy readers before writers, as for any added field.

    ``demand_source`` was added within version 1 the same way: a demand is identified by
    (source, id), and intake always sets it. A label written before it names only the id:
    a reader applies such a label only when exactly one demand (of any source) has that id,
    and to none when several sources used it (docs/architecture.md, "Sources and the
    organisation"). The label's own identity is (demand_source, id).

    ``not_a_demand`` was added within version 1 the same way: True when the person says the
    contact asked nothing of the organisation (praise, jokes, chatter, marketing), so it is
    neither value nor failure. Such a label must say ``demand_type`` "unknown" and no
    ``failure_kind`` (refused otherwise: "not a demand" with a type would be two answers);
    its ``purpose`` is the one the contact was filed under, taught to no model. A reader
    built before it refuses labels that carry it (as above: readers before writers); were
    one to read it with the field dropped, it would see an "unknown" label, which no
    figure counts as value or failure and no model learns a type from.
    """

    CE_TYPE: ClassVar[str] = "org.demandscope.demand.labelled.v1"

    schema_version: Literal[1] = 1
    id: Identifier = Field(description="This label's own event id: the idempotency key.")
    demand_id: Identifier = Field(description="The demand being confirmed or corrected.")
    demand_source: Identifier | None = Field(
        default=None,
        description="The source of that demand: a demand is (source, id). Always set by "
        "intake; absent only on labels written before it was added.",
    )
    demand_type: DemandType
    failure_kind: Slug | None = None
    purpose: Slug
    labelled_by: ShortText = Field(description="Who: a staff id, not a name.")
    labelled_at: AwareDatetime
    reason: LabelReason = Field(
        default="correction",
        description="Why it was made: 'audit' (a blind check of a random sample, the only "
        "labels that enter the failure-share estimate), 'review' (a low-confidence demand "
        "from the review queue) or 'correction' (anything else; the default).",
    )
    not_a_demand: bool = Field(
        default=False,
        description="The person's answer 'not a demand': the contact asked nothing of the "
        "organisation (praise, jokes, chatter, marketing). Then demand_type is 'unknown' "
        "and failure_kind absent; the failure share is estimated among demands only.",
    )
    note: str | None = Field(default=None, max_length=2_000)
    text: DemandText | None = Field(
        default=None, description="The demand's redacted text, when the reviewer had it."
    )

    @model_validator(mode="after")
    def _one_answer(self) -> DemandLabelled:
        conflicting = not_a_demand_conflicts(self.not_a_demand, self.demand_type, self.failure_kind)
        if "demand_type" in conflicting:
            raise ValueError(
                "a 'not a demand' label must have demand_type 'unknown', "
                f"not {self.demand_type.value!r}"
            )
        if "failure_kind" in conflicting:
            raise ValueError("a 'not a demand' label must have no failure_kind")
        return self

    def event_id(self) -> str:
        return self.id

    def partition_key(self) -> str:
        # Keyed by demand so every label of one demand is ordered. The demand id alone (not
        # its source): an old label without a source stays in order with the new ones.
        return self.demand_id
