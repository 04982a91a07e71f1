"""A person's confirmation or correction of a classification."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.events.base import Event, Identifier, ShortText, Slug
from shared.events.classification import DemandType
from shared.events.demand import DemandText


class DemandLabelled(Event):
    """Frontline staff's word on a demand. The latest label for a demand wins."""

    CE_TYPE: ClassVar[str] = "org.demandscope.demand.labelled.v1"

    schema_version: Literal[1] = 1
    id: Identifier = Field(description="This label's own event id: the idempotency key.")
    demand_id: Identifier = Field(description="The demand being confirmed or corrected.")
    demand_type: DemandType
    failure_kind: Slug | None = None
    purpose: Slug
    labelled_by: ShortText = Field(description="Who: a staff id, not a name.")
    labelled_at: AwareDatetime
    note: str | None = Field(default=None, max_length=2_000)
    text: DemandText | None = Field(
        default=None, description="The demand's redacted text, when the reviewer had it."
    )

    def event_id(self) -> str:
        return self.id

    def partition_key(self) -> str:
        # Keyed by demand so every label of one demand is ordered.
        return self.demand_id
