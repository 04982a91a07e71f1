"""A special-cause signal on a purpose's capability chart, raised once, for the owning team."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.events.base import Event, Slug
from shared.ownership import TeamSlug

# uuid5 namespace of signal ids: the id is a function of what the signal is, so every
# replica, every restart and every rebuild names one signal alike.
_SIGNAL_NAMESPACE = uuid.UUID("6f1d0b6e-3c52-5d0a-9a8e-1b7f3c2d4e5a")


def signal_id(*, purpose: str, measure: str, rule: str, at: datetime) -> str:
    """The stable id of the signal of ``rule`` on ``measure`` at the point ``at``."""
    return str(uuid.uuid5(_SIGNAL_NAMESPACE, f"{purpose}\n{measure}\n{rule}\n{at.isoformat()}"))


class SpecialCauseSignalled(Event):
    """Published on capability.signals, keyed by purpose, once per signal: the metrics
    service records it in its database first (only the first replica to do so publishes it)
    and sends it at least once, so a subscriber deduplicates on ``signal_id`` (the ce_id)."""

    CE_TYPE: ClassVar[str] = "org.demandscope.capability.signal.v1"

    schema_version: Literal[1] = 1
    signal_id: str = Field(
        description="Stable id of the signal: the same (purpose, measure, rule, point) always "
        "has the same id. Deduplicate on it; it is also the ce_id header."
    )
    purpose: Slug
    owner: TeamSlug = Field(description="The team that owns the purpose (the taxonomy's).")
    measure: str = Field(description="The chart, e.g. 'end_to_end_seconds', 'failure_per_day'.")
    rule: str = Field(description="e.g. 'beyond_limit', 'run_of_8', 'two_of_three_beyond_2_sigma'")
    at: AwareDatetime = Field(description="The point of the chart that signals.")
    value: float = Field(description="The value charted at that point.")
    centre_line: float
    lower_natural_process_limit: float
    upper_natural_process_limit: float
    raised_at: AwareDatetime = Field(description="When the metrics service first saw it.")

    def event_id(self) -> str:
        return self.signal_id

    def partition_key(self) -> str:
        return self.purpose
