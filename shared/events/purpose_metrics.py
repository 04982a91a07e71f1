"""The latest measures of one customer purpose, for subscribers of purpose.metrics."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.base import Event, Slug

EstimateStatus = Literal["validated", "not yet validated"]


class EndToEndPercentiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    p50_seconds: float | None = None
    p85_seconds: float | None = None
    p95_seconds: float | None = None


class Capability(BaseModel):
    """An XmR chart's limits: what the system predictably delivers. Never a target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measure: str = Field(description="What is charted, e.g. 'end_to_end_seconds'.")
    centre_line: float
    lower_natural_process_limit: float
    upper_natural_process_limit: float
    upper_range_limit: float
    baseline_from: AwareDatetime | None = None
    baseline_to: AwareDatetime | None = None


class Signal(BaseModel):
    """A special-cause signal on a capability chart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measure: str
    rule: str = Field(description="e.g. 'beyond_limit', 'run_of_8', 'two_of_three_beyond_2_sigma'")
    at: AwareDatetime
    value: float


class PurposeMetrics(Event):
    """Per purpose and window. Compacted topic keyed by purpose: the latest wins."""

    CE_TYPE: ClassVar[str] = "org.demandscope.purpose.metrics.v1"

    schema_version: Literal[1] = 1
    purpose: Slug
    window_start: AwareDatetime
    window_end: AwareDatetime
    volume: int = Field(ge=0)
    value_count: int = Field(ge=0)
    failure_count: int = Field(ge=0)
    unknown_count: int = Field(ge=0, default=0)
    failure_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="failure / (value + failure) as labelled (the machine's labels, a "
        "person's where one exists): a prediction, not an estimate. See failure_share_*.",
    )
    failure_share_estimate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The failure share among demands (a contact a person answered 'not a "
        "demand' is outside it), estimated from the machine's first labels corrected by the "
        "blind audit (power-tuned prediction-powered estimate; with such answers in the "
        "audit, the prediction-powered ratio failure / demand); null until validated.",
    )
    failure_share_ci_low: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Lower bound of its 95% interval."
    )
    failure_share_ci_high: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Upper bound of its 95% interval."
    )
    failure_share_audited: int = Field(
        default=0,
        ge=0,
        description="Audited demands behind the estimate: the audited contacts less those a "
        "person answered 'not a demand' (the metrics API's row counts every audited contact).",
    )
    failure_share_status: EstimateStatus = Field(
        default="not yet validated",
        description="'validated' once enough demands are audited for an interval; until "
        "then 'not yet validated', with no estimate and no interval.",
    )
    failure_by_kind: dict[str, int] = Field(default_factory=dict)
    end_to_end: EndToEndPercentiles = Field(default_factory=EndToEndPercentiles)
    cases_fulfilled: int = Field(ge=0, default=0)
    open_cases: int = Field(ge=0, default=0)
    contacts_per_case: float | None = None
    one_stop_share: float | None = Field(default=None, ge=0.0, le=1.0)
    capability: list[Capability] = Field(default_factory=list)
    signals: list[Signal] = Field(default_factory=list)
    computed_at: AwareDatetime

    def event_id(self) -> str:
        return f"{self.purpose}@{self.computed_at.isoformat()}"

    def partition_key(self) -> str:
        return self.purpose
