"""A customer's demand, as a contact-centre system reports it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from shared.events.base import Event, Identifier, ShortText

MAX_TEXT_LENGTH = 10_000


class Channel(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    CHAT = "chat"
    WEB = "web"
    LETTER = "letter"
    FACE_TO_FACE = "face_to_face"
    SOCIAL = "social"
    OTHER = "other"


AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttributeValue = Annotated[str, StringConstraints(max_length=500)]
DemandText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH, strip_whitespace=False)
]


class DemandReceived(Event):
    """One customer demand, in the customer's own (redacted) words."""

    CE_TYPE: ClassVar[str] = "org.demandscope.demand.received.v1"

    schema_version: Literal[1] = 1
    id: Identifier = Field(description="The sender's event id: the idempotency key.")
    occurred_at: AwareDatetime = Field(description="When the customer made the demand.")
    received_at: AwareDatetime = Field(description="When intake accepted it.")
    channel: Channel
    source: Identifier = Field(description="The system that sent it, e.g. 'genesys-eu'.")
    customer_ref: Identifier = Field(description="Opaque customer reference; never a name.")
    case_ref: Identifier | None = Field(default=None, description="The source's case, if any.")
    text: DemandText = Field(description="The customer's words, redacted by intake.")
    reason_code: ShortText | None = Field(
        default=None, description="The source's own wrap-up or reason code, if it has one."
    )
    team: ShortText | None = Field(default=None, description="The team that took the demand.")
    attributes: dict[AttributeKey, AttributeValue] = Field(
        default_factory=dict, max_length=50, description="Free-form extra context."
    )
    redactions: list[ShortText] = Field(
        default_factory=list,
        description="Kinds of personal data intake masked (text, reason code, team, attributes).",
    )

    def event_id(self) -> str:
        return self.id

    def partition_key(self) -> str:
        return self.customer_ref
