"""Two figures of the pages (issue 12), as the JSON API serves them too:

- **capacity consumed by failure demand**: staff hours spent on failure demand per purpose
  and period. A demand's own handling time counts where its source sent one (the
  ``handling_seconds`` attribute); otherwise the configured average of its channel stands
  in, and each row says how many of its demands were measured and how many estimated;
- **a purpose's demand over time** (value, failure, unknown per period), which
  ``/v1/demand/over-time`` gives for all purposes together;
- **failure flow**: from the purpose whose case a failure demand traces back to (its cause)
  to the failure demand's own purpose, with the latest examples of each cell.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import date, datetime

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db import figures as queries
from services.metrics.db.measures import Filters
from services.metrics.domain.windows import Granularity, bucket_of


class CapacityRow(BaseModel):
    purpose: str
    period_start: date
    failure_demands: int = Field(description="Failure demands of the purpose in the period.")
    measured_demands: int = Field(description="Of them, those whose source sent handling time.")
    measured_hours: float = Field(description="Staff hours the sources reported.")
    estimated_hours: float = Field(
        description="Staff hours from the channel averages, for the demands without a time."
    )
    hours: float = Field(description="measured_hours + estimated_hours.")


class PurposeOverTimeRow(BaseModel):
    purpose: str
    period_start: date
    volume: int
    value: int
    failure: int
    unknown: int
    failure_share: float | None = Field(description="failure / (value + failure), as labelled.")


class FlowCell(BaseModel):
    cause: str = Field(
        description="The purpose of the case the failure demand traces back to, or 'untraced'."
    )
    purpose: str = Field(description="The failure demand's own purpose.")
    failure: int


class FlowExample(BaseModel):
    source: str = Field(description="The demand's source: a demand is its source and id.")
    demand_id: str
    case_id: str
    occurred_at: datetime
    channel: str
    failure_kind: str | None
    words: str | None = Field(
        description="The customer's redacted words while they are retained (the review and "
        "audit queues keep them for a while), else null."
    )


async def capacity(
    session: AsyncSession,
    filters: Filters,
    granularity: Granularity,
    average_seconds: Mapping[str, float],
    *,
    purpose: str | None = None,
) -> list[CapacityRow]:
    """Staff hours on failure demand per purpose and period, most hours first per period."""
    measured: dict[tuple[str, date], float] = defaultdict(float)
    estimated: dict[tuple[str, date], float] = defaultdict(float)
    counts: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for row in await queries.failure_handling(session, filters, purpose=purpose):
        key = (row.purpose, bucket_of(row.day, granularity))
        counts[key][0] += row.demands
        counts[key][1] += row.measured
        measured[key] += row.measured_seconds
        average = average_seconds.get(row.channel, average_seconds.get("other", 0.0))
        estimated[key] += (row.demands - row.measured) * average
    rows = [
        CapacityRow(
            purpose=key[0],
            period_start=key[1],
            failure_demands=total,
            measured_demands=known,
            measured_hours=round(measured[key] / 3600, 2),
            estimated_hours=round(estimated[key] / 3600, 2),
            hours=round((measured[key] + estimated[key]) / 3600, 2),
        )
        for key, (total, known) in counts.items()
    ]
    return sorted(rows, key=lambda r: (r.period_start, -r.hours, r.purpose))


async def purpose_over_time(
    session: AsyncSession, filters: Filters, granularity: Granularity, *, purpose: str
) -> list[PurposeOverTimeRow]:
    """One purpose's value, failure and unknown demand per period (only periods with demand)."""
    buckets: dict[date, Counter[str]] = {}
    for day, kind, count in await queries.demand_days(session, filters, purpose=purpose):
        buckets.setdefault(bucket_of(day, granularity), Counter())[kind] += count
    return [
        PurposeOverTimeRow(
            purpose=purpose,
            period_start=start,
            volume=sum(c.values()),
            value=c["value"],
            failure=c["failure"],
            unknown=c["unknown"],
            failure_share=c["failure"] / (c["value"] + c["failure"])
            if c["value"] + c["failure"]
            else None,
        )
        for start, c in sorted(buckets.items())
    ]


async def failure_flow(session: AsyncSession, filters: Filters) -> list[FlowCell]:
    """Every (cause, purpose) pair with failure demand, most first."""
    cells = [
        FlowCell(cause=c, purpose=p, failure=n)
        for c, p, n in await queries.failure_flow(session, filters)
    ]
    return sorted(cells, key=lambda c: (-c.failure, c.cause, c.purpose))


async def failure_flow_examples(
    session: AsyncSession, filters: Filters, *, cause: str, purpose: str, limit: int = 5
) -> list[FlowExample]:
    found = await queries.failure_flow_examples(
        session, filters, cause=cause, purpose=purpose, limit=limit
    )
    words = await queries.words_of(session, [(e.source, e.demand_id) for e in found])
    return [
        FlowExample(
            source=e.source,
            demand_id=e.demand_id,
            case_id=e.case_id,
            occurred_at=e.occurred_at,
            channel=e.channel,
            failure_kind=e.failure_kind,
            words=words.get((e.source, e.demand_id)),
        )
        for e in found
    ]
