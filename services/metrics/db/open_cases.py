"""How many measured cases are open now, per source, purpose, first channel and team (''
for none): tables.OpenCaseCountRow, kept by the write path.

``move`` runs in the write path's synchronous recomputation
(ingest.recompute_on_connection), after the touched customers' derived rows are replaced:
their open cases as stored before and as stitched now, the difference added to the counts;
``add_opened`` after a stitch at the tail, which only opens cases.
``counts`` reads them for the figures: a few rows instead of counting every open case per
request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db import write_path
from services.metrics.db.sql import Customer, SyncDb, run_sync
from services.metrics.db.write_path import StoredState
from services.metrics.domain.cases import Case, DemandFact, StitchedCustomer

OpenKey = tuple[str, str, str, str]  # source, purpose, first channel, team

_UPSERT = (
    "INSERT INTO open_case_counts (source, purpose, channel, team, cases) "
    "VALUES (:source, :purpose, :channel, :team, :cases) "
    "ON CONFLICT (source, purpose, channel, team) "
    "DO UPDATE SET cases = open_case_counts.cases + excluded.cases"
)


def _key(source: str, purpose: str | None, channel: str | None, team: str | None) -> OpenKey:
    return (source, purpose or "", channel or "", team or "")


def move(
    db: SyncDb,
    stored: StoredState,
    stitched: dict[Customer, tuple[StitchedCustomer, list[DemandFact]]],
) -> None:
    """The counts moved from the touched customers' cases as stored to their cases as
    stitched now."""
    columns = write_path._CASE_COLUMNS  # the stored cases' rows, in the database's form
    at = {name: columns.index(name) for name in ("status", "measured", "purpose")}
    channel, team, source = (columns.index(c) for c in ("first_channel", "team", "source"))
    deltas: Counter[OpenKey] = Counter()
    for row in stored.cases.values():
        if row[at["status"]] == "open" and row[at["measured"]]:
            deltas[_key(row[source], row[at["purpose"]], row[channel], row[team])] -= 1
    _count_open(
        deltas,
        (
            (case_source, case)
            for (case_source, _customer), (result, _demands) in stitched.items()
            for case in result.cases
        ),
    )
    _apply(db, deltas)


def add_opened(db: SyncDb, cases: Iterable[tuple[str, Case]]) -> None:
    """The counts of cases newly opened, by (source, case): what a stitch at the tail adds
    (ingest: it leaves every stored case's status as it was)."""
    deltas: Counter[OpenKey] = Counter()
    _count_open(deltas, cases)
    _apply(db, deltas)


def take_closed(db: SyncDb, rows: Iterable[dict[str, Any]]) -> None:
    """The counts less the cases closed at the tail, by their rows as stored (by column)."""
    deltas: Counter[OpenKey] = Counter()
    for row in rows:
        if row["status"] == "open" and row["measured"]:
            deltas[_key(row["source"], row["purpose"], row["first_channel"], row["team"])] -= 1
    _apply(db, deltas)


def _count_open(deltas: Counter[OpenKey], cases: Iterable[tuple[str, Case]]) -> None:
    for case_source, case in cases:
        if case.status == "open" and case.measured:
            deltas[_key(case_source, case.purpose, case.first_channel, case.team)] += 1


def _apply(db: SyncDb, deltas: Counter[OpenKey]) -> None:
    db.executemany(
        _UPSERT,
        [
            {"source": s, "purpose": p, "channel": c, "team": t, "cases": n}
            for (s, p, c, t), n in sorted(deltas.items())
            if n
        ],
    )


async def counts(
    session: AsyncSession,
    *,
    source: str | None,
    channel: str | None,
    team: str | None,
    purposes: Iterable[str] | None = None,
) -> dict[str | None, int]:
    """Open cases per purpose (a case without one under None), for the filters given."""
    chosen = None if purposes is None else list(purposes)
    return await run_sync(
        session,
        lambda db: counts_of(db, source=source, channel=channel, team=team, purposes=chosen),
    )


def counts_of(
    db: SyncDb,
    *,
    source: str | None,
    channel: str | None,
    team: str | None,
    purposes: Sequence[str] | None = None,
) -> dict[str | None, int]:
    """counts, on the connection (sql.run_sync): for a caller with other reads to make in
    the same hop."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    for column, value in (("source", source), ("channel", channel), ("team", team)):
        if value is not None:
            conditions.append(f"{column} = :{column}")
            params[column] = value
    if purposes is not None:
        names = [f"p{i}" for i in range(len(purposes))]
        params |= dict(zip(names, purposes, strict=True))
        # No purpose at all matches nothing (an empty IN is not SQL on every database).
        conditions.append(f"purpose IN ({', '.join(':' + n for n in names)})" if names else "0 = 1")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = db.rows(
        f"SELECT purpose, sum(cases) FROM open_case_counts{where} GROUP BY purpose", params
    )
    return {(p or None): int(n) for p, n in rows if n}
