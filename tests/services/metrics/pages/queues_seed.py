"""The demo data set's queue words, kept as if intake had just received them.

The demo's demands are dated around the tests' fixed NOW, which is past the queues' 30-day
retention by the wall clock, so the seeded database keeps no words and both queues are
empty. These tests need queues to work from: the words of every review candidate and
audit item, received "now", and the review queue's entries the write path would keep."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select

from devstack.demo import demo_events
from services.metrics.db import review_entries
from services.metrics.db.tables import AuditItemRow, Demand, QueueTextRow
from shared.database.engine import create_engine, session_factory
from shared.events import DemandClassified

from .conftest import NOW


async def keep_queue_words(database_url: str, review_below: float = 0.6) -> int:
    events, _changes = demo_events(NOW)
    words = {
        (e.demand.source, e.demand.id): e.demand.text
        for e in events
        if isinstance(e, DemandClassified)
    }
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            review = select(Demand.source, Demand.demand_id).where(
                or_(Demand.needs_review.is_(True), Demand.confidence < review_below)
            )
            audit = select(AuditItemRow.source, AuditItemRow.demand_id)
            waiting = {
                (source, demand_id)
                for statement in (review, audit)
                for source, demand_id in (await session.execute(statement)).all()
            }
            now = datetime.now(UTC)
            session.add_all(
                QueueTextRow(source=s, demand_id=d, text=words[(s, d)], received_at=now)
                for s, d in sorted(waiting)
                if (s, d) in words
            )
            await session.flush()
            # As the write path does when it keeps a demand's words.
            await review_entries.refresh(session, waiting)
            return len(waiting)
    finally:
        await engine.dispose()
