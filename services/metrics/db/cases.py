"""A case and its demands and events, for the timeline.

Read in one go on the session's connection (``sql.run_sync``: on SQLite one hop to
aiosqlite's thread, plain sqlite3): the ORM's four statements cost 1.3 ms of the event
loop's CPU per found case and 0.7 per miss, and a client polling for a new case (bench
stack's probes) asks several times before it is there; this reads the same rows in 0.2 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.metrics.db import sql

_CASE_COLUMNS = (
    "source, customer_ref, case_id, case_ref, purpose, status, started_at, fulfilled_at, "
    "end_to_end_seconds, reopened, contacts, failure_contacts, channels, one_stop"
)
# A case by its id, else by the source's reference (ix_cases_case_ref); with a source, that
# source's only. Module constants, so that their plans are tested as run.
BY_ID = f"SELECT {_CASE_COLUMNS} FROM cases WHERE case_id = :case"
BY_ID_OF_SOURCE = f"{BY_ID} AND source = :source"
BY_REF = f"SELECT {_CASE_COLUMNS} FROM cases WHERE case_ref = :case"
BY_REF_OF_SOURCE = f"{BY_REF} AND source = :source"
DEMANDS = (
    "SELECT occurred_at, demand_id, channel, demand_type, failure_kind, purpose, labelled "
    "FROM demand_facts WHERE source = :source AND customer_ref = :customer "
    "AND case_id = :case ORDER BY occurred_at, demand_id"
)
EVENTS = (
    "SELECT occurred_at, event_id, type, purpose FROM case_events "
    "WHERE source = :source AND customer_ref = :customer AND case_ref = :ref "
    "ORDER BY occurred_at, event_id"
)


@dataclass(frozen=True)
class Case:
    source: str
    customer_ref: str
    case_id: str
    case_ref: str | None
    purpose: str | None
    status: str
    started_at: datetime
    fulfilled_at: datetime | None
    end_to_end_seconds: float | None
    reopened: int
    contacts: int
    failure_contacts: int
    channels: str  # comma-separated, sorted
    one_stop: bool


@dataclass(frozen=True)
class CaseDemand:
    occurred_at: datetime
    demand_id: str
    channel: str
    demand_type: str
    failure_kind: str | None
    purpose: str
    labelled: bool


@dataclass(frozen=True)
class CaseEventEntry:
    occurred_at: datetime
    event_id: str
    type: str
    purpose: str | None


@dataclass(frozen=True)
class Found:
    """The cases ``case_id`` names; when it names exactly one, its demands and events."""

    cases: list[Case]
    demands: list[CaseDemand]
    events: list[CaseEventEntry]


def find(db: sql.SyncDb, case_id: str, source: str | None) -> Found:
    """A case by its id or by the source's case ref; ``source``: that source's cases only."""
    params: dict[str, Any] = {"case": case_id}
    by_id, by_ref = BY_ID, BY_REF
    if source is not None:
        params["source"] = source
        by_id, by_ref = BY_ID_OF_SOURCE, BY_REF_OF_SOURCE
    rows = db.rows(by_id, params) or db.rows(by_ref, params)
    found = [_case(db, row) for row in rows]
    if len(found) != 1:
        return Found(found, [], [])
    case = found[0]
    at = db.read_time
    demands = [
        CaseDemand(at(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]))
        for r in db.rows(
            DEMANDS,
            {"source": case.source, "customer": case.customer_ref, "case": case.case_id},
        )
    ]
    events = (
        []
        if case.case_ref is None
        else [
            CaseEventEntry(at(r[0]), r[1], r[2], r[3])
            for r in db.rows(
                EVENTS,
                {"source": case.source, "customer": case.customer_ref, "ref": case.case_ref},
            )
        ]
    )
    return Found(found, demands, events)


def _case(db: sql.SyncDb, row: Any) -> Case:
    return Case(
        source=row[0],
        customer_ref=row[1],
        case_id=row[2],
        case_ref=row[3],
        purpose=row[4],
        status=row[5],
        started_at=db.read_time(row[6]),
        fulfilled_at=None if row[7] is None else db.read_time(row[7]),
        end_to_end_seconds=row[8],
        reopened=row[9],
        contacts=row[10],
        failure_contacts=row[11],
        channels=row[12],
        one_stop=bool(row[13]),
    )
