"""Stored metrics rows for the tests of the figures' reads: fulfilled cases with a chosen
end-to-end time, written through the one write path (services/metrics/ingest.py) into a
migrated database, so the derived tables and their daily counts are as live makes them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, Channel, Event
from tests.support.factories import case_event, demand_classified


def fulfilled_case(
    ref: str,
    *,
    opened: datetime,
    seconds: float,
    purpose: str,
    source: str | None = None,
    channel: Channel | None = None,
    team: str | None = None,
) -> list[Event]:
    """A customer's one demand (its case opened) and the case's fulfilment ``seconds``
    later: demand ``d-<ref>`` and event ``e-<ref>``, customer ``C-<ref>``, case
    ``K-<ref>``. ``source``, ``channel`` and ``team`` as the factories' unless given."""
    names: dict[str, Any] = {"customer_ref": f"C-{ref}", "case_ref": f"K-{ref}"}
    given = {"source": source, "channel": channel, "team": team}
    of_demand: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    of_event: dict[str, Any] = {} if source is None else {"source": source}
    return [
        demand_classified(id=f"d-{ref}", occurred_at=opened, purpose=purpose, **names,
                          **of_demand),
        case_event(id=f"e-{ref}", type=CaseEventType.FULFILLED, purpose=purpose,
                   occurred_at=opened + timedelta(seconds=seconds), **names, **of_event),
    ]  # fmt: skip


async def stored(database_url: str, events: list[Event]) -> AsyncEngine:
    """A migrated database holding ``events`` (applied in one transaction, none refused);
    the caller disposes of the engine."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            assert not (await apply_events(session, events)).refused
    except BaseException:
        await engine.dispose()
        raise
    return engine
