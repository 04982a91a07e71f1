"""What senders post. Intake stamps received_at and redaction on the way to DemandReceived."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import Identifier, ShortText
from shared.events.demand import AttributeKey, AttributeValue, Channel, DemandText


class DemandSubmission(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "genesys-7f3a9c",
                    "occurred_at": "2026-11-20T09:14:00+00:00",
                    "channel": "phone",
                    "source": "demo",
                    "customer_ref": "C-104233",
                    "text": "The engineer was meant to come yesterday and nobody turned up.",
                    "team": "field-services",
                }
            ]
        },
    )

    id: Identifier = Field(description="Your event id. A repeat is answered as a duplicate.")
    occurred_at: AwareDatetime = Field(description="When the customer made the demand, with zone.")
    channel: Channel
    source: Identifier = Field(description="Your system's name.")
    customer_ref: Identifier
    case_ref: Identifier | None = None
    text: DemandText = Field(description="The customer's words.")
    reason_code: ShortText | None = None
    team: ShortText | None = None
    attributes: dict[AttributeKey, AttributeValue] = Field(default_factory=dict, max_length=50)


class Accepted(BaseModel):
    id: str
    status: str = Field(description="'accepted' or 'duplicate'.")


class Problem(BaseModel):
    """RFC 9457 problem details, with one entry per invalid field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)
