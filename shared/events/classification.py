"""The classifier's judgement of a demand: value or failure, why, and for what purpose."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import Event, Identifier, Slug
from shared.events.demand import DemandReceived


class DemandType(StrEnum):
    VALUE = "value"
    FAILURE = "failure"
    UNKNOWN = "unknown"


class FailureKind(StrEnum):
    """The built-in failure kinds; an organisation's taxonomy may add its own slugs."""

    PROGRESS_CHASING = "progress_chasing"
    REPEAT = "repeat"
    NOT_DONE = "not_done"
    NOT_DONE_RIGHT = "not_done_right"
    NOT_UNDERSTOOD = "not_understood"
    OTHER = "other"


class ClassificationMethod(StrEnum):
    RULE = "rule"
    MODEL = "model"
    CONTEXT = "context"
    HUMAN = "human"


class CausedBy(BaseModel):
    """The earlier demand or case that a failure demand traces back to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["demand", "case"]
    ref: Identifier
    source: Identifier | None = Field(
        default=None,
        description="The source of that demand or case (refs are unique within a source); "
        "absent on events written before it was added, which meant the demand's own source.",
    )


class DemandClassified(Event):
    """A demand with its labels. Keyed like the demand, by customer."""

    CE_TYPE: ClassVar[str] = "org.demandscope.demand.classified.v1"

    schema_version: Literal[1] = 1
    demand: DemandReceived
    demand_type: DemandType
    failure_kind: Slug | None = Field(
        default=None,
        description="Set for failure demand: one of FailureKind or the taxonomy's own.",
    )
    purpose: Slug = Field(description="The customer purpose, e.g. 'billing / pay my bill'.")
    confidence: float = Field(ge=0.0, le=1.0)
    method: ClassificationMethod
    model_version: str = Field(min_length=1, max_length=100)
    needs_review: bool = False
    caused_by: CausedBy | None = None
    classified_at: AwareDatetime

    def event_id(self) -> str:
        return self.demand.id

    def partition_key(self) -> str:
        return self.demand.customer_ref
