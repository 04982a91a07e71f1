"""Building blocks every query module of the metrics service uses: the keys, UTC times
read back from SQLite, chunks under SQLite's parameter cap, insert-or-ignore."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

# SQLite caps the bound parameters of one statement; stay well below it.
_CHUNK = 400

# A customer is the source's own reference: (source, customer_ref). A demand is (source, id).
Customer = tuple[str, str]
DemandKey = tuple[str, str]


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything is stored in UTC, so say so."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def insert_ignoring_duplicates(
    session: AsyncSession, table: Any, rows: Sequence[dict[str, Any]]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: a redelivered event changes nothing."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # On the Table, not the mapped class: the ORM's bulk insert groups rows by the columns
    # that are not None and sends a statement per group, which with alternating Nones (a
    # value demand has no failure kind, the next one has) was one statement per row.
    # executemany form: SQLAlchemy batches it ("insertmanyvalues") without compiling one
    # huge VALUES statement per chunk, which cost more than the database work itself.
    await session.execute(insert(_table(table)).on_conflict_do_nothing(), list(rows))


def same_demand(table: Any, other: Any, *, source: str = "source") -> Any:
    """``table`` and ``other`` name one demand: its source and its id."""
    return and_(getattr(table, source) == other.source, table.demand_id == other.demand_id)


def _table(table: Any) -> Any:
    """The Core table of a mapped class (a Table is itself)."""
    return getattr(table, "__table__", table)
