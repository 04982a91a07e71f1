"""Case lifecycle events: what the organisation did about a customer's purpose."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.events.base import Event, Identifier, Slug


class CaseEventType(StrEnum):
    OPENED = "opened"
    PROGRESSED = "progressed"
    FULFILLED = "fulfilled"
    ABANDONED = "abandoned"
    REOPENED = "reopened"


class CaseEvent(Event):
    """A step in the life of a case, on the customer's clock."""

    CE_TYPE: ClassVar[str] = "org.demandscope.case.event.v1"

    schema_version: Literal[1] = 1
    id: Identifier = Field(description="The sender's event id: the idempotency key.")
    case_ref: Identifier
    customer_ref: Identifier
    type: CaseEventType
    occurred_at: AwareDatetime
    source: Identifier | None = None
    purpose: Slug | None = Field(default=None, description="The customer purpose, if known.")

    def event_id(self) -> str:
        return self.id

    def partition_key(self) -> str:
        return self.customer_ref
