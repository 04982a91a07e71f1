"""The HTTP API's response and request bodies (the OpenAPI document is generated from them)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.metrics.domain.windows import OutOfRange, to_utc
from shared.privacy import Redactor

_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_REDACTOR = Redactor()  # compiled once
_NOTE_LENGTH = 2000


class Percentiles(BaseModel):
    """Linear interpolation between closest ranks (numpy's default); seconds."""

    p50_seconds: float | None = None
    p85_seconds: float | None = None
    p95_seconds: float | None = None


MACHINE_SHARE = (
    "failure / (value + failure) as labelled: the machine's labels, a person's where one "
    "exists. The machine's prediction, not an estimate: see failure_share_estimate."
)
# Every failure share carries its estimate from the blind audit (docs/services/metrics.md,
# "Estimates and the audit"): the same fields on every row, in the JSON and the CSV.
ShareEstimateValue = Annotated[
    float | None,
    Field(
        description="The failure share among demands estimated from the machine's first "
        "labels, corrected by the blind audit (power-tuned prediction-powered estimate, "
        "stratified by purpose and week; a ratio, failure over demand, once an auditor "
        "answered 'not a demand'); null while not yet validated."
    ),
]
ShareBound = Annotated[
    float | None, Field(description="A bound of the estimate's 95% interval; null until validated.")
]
AuditedCount = Annotated[
    int, Field(description="Audited contacts behind the estimate ('not a demand' answers too).")
]
NotADemandShare = Annotated[
    float | None,
    Field(
        description="The estimated share of contacts that were not demands (an auditor's "
        "'not a demand': praise, jokes, chatter, marketing); null while not yet validated."
    ),
]
NotADemandAudited = Annotated[
    int, Field(description="Audited contacts an auditor called 'not a demand'.")
]
EstimateStatus = Annotated[
    Literal["validated", "not yet validated"],
    Field(
        description="'not yet validated' until enough demands are audited for an interval "
        "(then there is no estimate and no interval, only the machine's share)."
    ),
]


class PurposeSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "purpose": "move home",
                    "volume": 120,
                    "value": 70,
                    "failure": 48,
                    "unknown": 2,
                    "failure_share": 0.4068,
                    "failure_share_estimate": 0.452,
                    "failure_share_ci_low": 0.371,
                    "failure_share_ci_high": 0.533,
                    "failure_share_audited": 40,
                    "failure_share_status": "validated",
                    "cases_fulfilled": 55,
                    "open_cases": 9,
                    "end_to_end": {
                        "p50_seconds": 172800.0,
                        "p85_seconds": 432000.0,
                        "p95_seconds": 777600.0,
                    },
                    "contacts_per_case": 1.8,
                    "one_stop_share": 0.42,
                }
            ]
        }
    )

    purpose: str
    volume: int = Field(description="Demands in the period.")
    value: int = Field(description="Value demands.")
    failure: int = Field(description="Failure demands.")
    unknown: int = Field(description="Demands whose type could not be told.")
    failure_share: float | None = Field(description=MACHINE_SHARE)
    failure_share_estimate: ShareEstimateValue = None
    failure_share_ci_low: ShareBound = None
    failure_share_ci_high: ShareBound = None
    failure_share_audited: AuditedCount = 0
    failure_share_status: EstimateStatus = "not yet validated"
    cases_fulfilled: int = Field(0, description="Cases whose purpose was met in the period.")
    open_cases: int = Field(0, description="Cases open now (the period does not apply).")
    end_to_end: Percentiles = Field(
        default_factory=Percentiles,
        description="End-to-end time of the cases fulfilled in the period, first demand to "
        "fulfilment, in calendar seconds.",
    )
    contacts_per_case: float | None = Field(
        None, description="Demands per fulfilled case: 1.0 means every purpose met at once."
    )
    one_stop_share: float | None = Field(
        None, description="Share of fulfilled cases met at the first contact, never reopened."
    )
    # Added last (issue 11): a consumer reading the CSV by position keeps its columns.
    not_a_demand_share: NotADemandShare = None
    not_a_demand_ci_low: ShareBound = None
    not_a_demand_ci_high: ShareBound = None
    not_a_demand_audited: NotADemandAudited = 0


class CountByKey(BaseModel):
    key: str
    count: int


class HistogramBucket(BaseModel):
    le_seconds: float | None = Field(description="Upper bound; null for the overflow bucket.")
    count: int


class OpenCaseAge(BaseModel):
    count: int
    p50_seconds: float | None = None
    p85_seconds: float | None = None
    oldest_seconds: float | None = None


class ChartPointOut(BaseModel):
    at: datetime
    value: float
    moving_range: float | None = Field(description="|x - previous x|; null for the first point.")


class SignalOut(BaseModel):
    rule: str = Field(description="beyond_limit, run_of_eight, two_of_three_beyond_two_sigma, ...")
    at: datetime
    value: float


class CapabilityChart(BaseModel):
    """An XmR chart: what the system predictably delivers. Never a target."""

    measure: str = Field(
        description="end_to_end_seconds, value_per_day, failure_per_day or failure_share_per_day."
    )
    centre_line: float
    lower_natural_process_limit: float
    upper_natural_process_limit: float
    upper_range_limit: float
    baseline_from: datetime
    baseline_to: datetime
    baseline_size: int
    provisional: bool = Field(
        description="True while the baseline holds fewer points than configured: the limits "
        "still move as points arrive, until the baseline is full."
    )
    points: list[ChartPointOut]
    signals: list[SignalOut]


class ChangeIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "changed_at": "2026-03-01T00:00:00Z",
                    "note": "Engineers now book the visit during the first call.",
                }
            ]
        }
    )

    changed_at: AwareDatetime = Field(
        description="When the system changed: ISO 8601 with an offset (2026-03-01T00:00:00Z); "
        "a number is refused, not read as seconds since 1970."
    )
    note: str = Field(
        min_length=1,
        max_length=_NOTE_LENGTH,
        description="What changed, and why. Personal data in it (cards, e-mail addresses, "
        "phones...) is masked before it is stored.",
    )

    @field_validator("note")
    @classmethod
    def _masked(cls, value: str) -> str:
        # A person's words, like a demand's text: masked before they are stored or shown.
        masked = _REDACTOR.redact(value).text
        if len(masked) > _NOTE_LENGTH:
            raise ValueError(
                f"is longer than {_NOTE_LENGTH} characters once personal data in it is masked"
            )
        return masked

    @field_validator("changed_at", mode="before")
    @classmethod
    def _iso_8601(cls, value: object) -> object:
        # pydantic's lax mode reads 0 or "1700000000" as seconds since 1970: a person
        # recording a change writes a date, so anything else is a mistake to point out.
        if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE_TIME.match(value)):
            return value
        raise ValueError("must be an ISO 8601 date and time with an offset, e.g. 2026-03-01T00:00Z")

    @field_validator("changed_at")
    @classmethod
    def _storable(cls, value: datetime) -> datetime:
        try:
            to_utc(value)
        except OutOfRange:
            raise ValueError(
                "is outside the dates that can be stored (years 1 to 9999 in UTC)"
            ) from None
        return value


class ChangeOut(BaseModel):
    change_id: str = Field(description="The change's event id on system.changes.")
    purpose: str
    changed_at: datetime
    note: str
    recorded_at: datetime
    recorded_by: str | None = Field(
        None, description="Who recorded it: a person's username, or key:<source> for an API key."
    )


class ChangeAccepted(BaseModel):
    """A change published and acknowledged by the broker, not yet stored by the consumer."""

    change_id: str = Field(description="The change's event id on system.changes.")
    purpose: str
    status: Literal["accepted"] = "accepted"
    changes_url: str = Field(description="The purpose's list of changes, where it will appear.")


class PurposeDetail(BaseModel):
    summary: PurposeSummary
    failure_by_kind: list[CountByKey]
    failure_by_cause: list[CountByKey] = Field(
        description="Failure demands by the purpose of the case they trace back to "
        "('untraced' when the classifier could not tell)."
    )
    end_to_end_distribution: list[HistogramBucket]
    open_case_age: OpenCaseAge
    charts: list[CapabilityChart]
    changes: list[ChangeOut]


class OverTimeRow(BaseModel):
    period_start: date
    volume: int
    value: int
    failure: int
    unknown: int
    failure_share: float | None = Field(description=MACHINE_SHARE)
    failure_share_estimate: ShareEstimateValue = None
    failure_share_ci_low: ShareBound = None
    failure_share_ci_high: ShareBound = None
    failure_share_audited: AuditedCount = 0
    failure_share_status: EstimateStatus = "not yet validated"
    not_a_demand_share: NotADemandShare = None
    not_a_demand_ci_low: ShareBound = None
    not_a_demand_ci_high: ShareBound = None
    not_a_demand_audited: NotADemandAudited = 0


class OverallRow(BaseModel):
    """Every demand the filters select, as one row."""

    volume: int
    value: int
    failure: int
    unknown: int
    failure_share: float | None = Field(description=MACHINE_SHARE)
    failure_share_estimate: ShareEstimateValue = None
    failure_share_ci_low: ShareBound = None
    failure_share_ci_high: ShareBound = None
    failure_share_audited: AuditedCount = 0
    failure_share_status: EstimateStatus = "not yet validated"
    not_a_demand_share: NotADemandShare = None
    not_a_demand_ci_low: ShareBound = None
    not_a_demand_ci_high: ShareBound = None
    not_a_demand_audited: NotADemandAudited = 0


class ChannelRow(BaseModel):
    channel: str
    volume: int
    value: int
    failure: int
    unknown: int
    failure_share: float | None = Field(description=MACHINE_SHARE)
    failure_share_estimate: ShareEstimateValue = None
    failure_share_ci_low: ShareBound = None
    failure_share_ci_high: ShareBound = None
    failure_share_audited: AuditedCount = 0
    failure_share_status: EstimateStatus = "not yet validated"
    not_a_demand_share: NotADemandShare = None
    not_a_demand_ci_low: ShareBound = None
    not_a_demand_ci_high: ShareBound = None
    not_a_demand_audited: NotADemandAudited = 0


class ParetoRow(BaseModel):
    purpose: str
    failure: int
    share_of_all_failure: float | None
    cumulative_share: float | None
    volume: int
    failure_share: float | None = Field(description=MACHINE_SHARE)
    failure_share_estimate: ShareEstimateValue = None
    failure_share_ci_low: ShareBound = None
    failure_share_ci_high: ShareBound = None
    failure_share_audited: AuditedCount = 0
    failure_share_status: EstimateStatus = "not yet validated"
    not_a_demand_share: NotADemandShare = None
    not_a_demand_ci_low: ShareBound = None
    not_a_demand_ci_high: ShareBound = None
    not_a_demand_audited: NotADemandAudited = 0


class TimelineEntry(BaseModel):
    at: datetime
    kind: str = Field(description="'demand' or 'case_event'.")
    id: str
    channel: str | None = None
    demand_type: str | None = None
    failure_kind: str | None = None
    purpose: str | None = None
    event_type: str | None = None
    labelled: bool | None = None


class CaseTimeline(BaseModel):
    case_id: str
    case_ref: str | None
    customer_ref: str
    purpose: str | None
    status: str
    started_at: datetime
    fulfilled_at: datetime | None
    end_to_end_seconds: float | None
    reopened: int
    contacts: int
    failure_contacts: int
    channels: list[str]
    one_stop: bool
    entries: list[TimelineEntry]


class AuditItem(BaseModel):
    """A demand to label blind: what the customer said, how and when. Nothing the machine
    said about it (its type, purpose or confidence) is shown, so no one is anchored by it."""

    source: str = Field(description="The demand's source: label it with this demand_source.")
    demand_id: str
    channel: str
    occurred_at: datetime
    text: str = Field(description="The customer's words, redacted by intake.")


class AuditQueue(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "open": 41,
                    "items": [
                        {
                            "demand_id": "call-0001",
                            "channel": "phone",
                            "occurred_at": "2026-11-20T09:14:00Z",
                            "text": "The engineer was meant to come yesterday and nobody "
                            "turned up.",
                        }
                    ],
                }
            ]
        }
    )

    open: int = Field(description="Open audit items whose words are still kept.")
    items: list[AuditItem] = Field(description="In the order of their random draw.")


class ReviewItem(BaseModel):
    """A demand the machine was unsure of, with its suggestion."""

    source: str = Field(description="The demand's source: label it with this demand_source.")
    demand_id: str
    channel: str
    occurred_at: datetime
    text: str = Field(description="The customer's words, redacted by intake.")
    purpose: str = Field(description="The machine's suggested purpose.")
    demand_type: str = Field(description="The machine's suggestion: value, failure or unknown.")
    failure_kind: str | None = None
    confidence: float
    needs_review: bool = Field(description="The classifier asked for a person's review.")
    model_version: str


class ReviewQueue(BaseModel):
    waiting: int = Field(description="Demands waiting for a review (whose words are kept).")
    items: list[ReviewItem] = Field(description="Lowest confidence first.")
