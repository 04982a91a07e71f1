"""An auditor's "not a demand" on both databases: stored with the label, it makes every
failure share the service reports the share among demands (shared/estimates.py's ratio),
with the share of contacts that were not demands beside it; volumes do not move."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.audit import AuditPolicy
from services.metrics.db import audit_sample
from services.metrics.db.measures import Filters
from services.metrics.db.migrate import upgrade
from services.metrics.domain.audit import AuditPlan, week_start
from services.metrics.ingest import apply_events
from services.metrics.service import ChartSettings, purpose_metrics, purpose_summaries
from shared.database.engine import create_engine, session_factory
from shared.estimates import AuditPair, estimate_share
from shared.events import DemandType, Event
from tests.support.factories import demand_classified, demand_labelled

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = datetime.combine(week_start(NOW) - timedelta(days=7), datetime.min.time(), UTC)
VALUE, FAILURE, UNKNOWN = DemandType.VALUE, DemandType.FAILURE, DemandType.UNKNOWN


def _demands() -> list[Event]:
    # 30 contacts, all in the audit (the floor is 30): the machine calls 12 failure.
    return [
        demand_classified(
            id=f"d-{i}",
            customer_ref=f"C-{i}",
            occurred_at=T0 + timedelta(hours=10, minutes=i),
            purpose="billing",
            demand_type=FAILURE if i < 12 else VALUE,
            failure_kind="not_done" if i < 12 else None,
            confidence=0.9,
        )
        for i in range(30)
    ]


def _audit_label(i: int, *, chatter_answer: str) -> Event:
    """People agree with the machine, but six contacts (four it called failure) are chatter:
    answered "not a demand", or, as before the answer existed, value."""
    chatter = i in (0, 1, 2, 3, 20, 21)
    not_a_demand = chatter and chatter_answer == "not a demand"
    demand_type = UNKNOWN if not_a_demand else VALUE if chatter or i >= 12 else FAILURE
    return demand_labelled(
        id=f"audit-{i}",
        demand_id=f"d-{i}",
        demand_source="test",
        purpose="billing",
        demand_type=demand_type,
        failure_kind="not_done" if demand_type is FAILURE else None,
        labelled_at=NOW,
        reason="audit",
        not_a_demand=not_a_demand,
    )


@pytest.mark.parametrize("chatter_answer", ["not a demand", "value"])
async def test_not_a_demand_makes_the_share_one_among_demands(
    database_url: str, chatter_answer: str
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    policy = AuditPolicy(plan=AuditPlan(rate=0.02, min_per_week=30, max_per_week=300))
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        demands = _demands()
        source = demands[0].demand.source  # type: ignore[attr-defined]
        labels = [
            _audit_label(i, chatter_answer=chatter_answer).model_copy(
                update={"demand_source": source}
            )
            for i in range(30)
        ]
        async with sessions.begin() as session:
            await apply_events(session, demands, policy)
        async with sessions.begin() as session:
            await apply_events(session, labels, policy)
        async with sessions() as session:
            pairs = await audit_sample.audited(session, Filters())
            (summary,) = await purpose_summaries(session, Filters())
            event = await purpose_metrics(
                session, "billing", settings=ChartSettings(), window_days=28, now=NOW
            )
    finally:
        await engine.dispose()
    said = chatter_answer == "not a demand"
    assert sum(p.not_a_demand for p in pairs) == (6 if said else 0)
    expected = estimate_share(
        30,
        12,
        [
            AuditPair(
                int(i < 12),
                int(i < 12 and i not in (0, 1, 2, 3)),
                demand=not (said and i in (0, 1, 2, 3, 20, 21)),
            )
            for i in range(30)
        ],
    )
    assert summary.failure_share_status == "validated"
    assert summary.failure_share_estimate == pytest.approx(expected.estimate)
    assert summary.failure_share_ci_low == pytest.approx(expected.ci_low)
    assert summary.failure_share_ci_high == pytest.approx(expected.ci_high)
    assert summary.failure_share_audited == 30
    assert summary.not_a_demand_audited == (6 if said else 0)
    assert summary.not_a_demand_share == pytest.approx(6 / 30 if said else 0.0)
    # The share among the 24 demands (8 failure) against among the 30 contacts.
    assert expected.estimate == pytest.approx(8 / 24 if said else 8 / 30)
    assert summary.volume == 30  # every contact still counts in the volumes
    # purpose.metrics: the same estimate, behind it the audited demands (the classifier's
    # prior clamps by them), not the audited contacts.
    assert event.failure_share_estimate == pytest.approx(expected.estimate)
    assert event.failure_share_audited == (24 if said else 30)
