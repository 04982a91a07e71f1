"""The daily aggregates (demand_days, case_days, case_time_days): the write path moves
them by the difference of a customer's rows before and after their swap."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics.db.sql import Customer, DemandKey, as_utc, chunks, same_demand
from services.metrics.db.tables import (
    CaseDayRow,
    CaseTimeDayRow,
    Demand,
    DemandDayRow,
    DemandFactRow,
)

# (fulfilled day, source, purpose, first channel, team): case_days' key, '' for none.
CaseDayKey = tuple[date, str, str, str, str]
CASE_DAY_COLUMNS = (
    "source",
    "purpose",
    "first_channel",
    "team",
    "status",
    "measured",
    "fulfilled_at",
    "contacts",
    "one_stop",
    "end_to_end_seconds",
)


def count_case(deltas: dict[CaseDayKey, list[int]], case: dict[str, Any], sign: int) -> None:
    """Add (or with sign -1 take away) a case row's part of case_days: a measured case
    fulfilled on its day, as fulfilled_case_counts counts it."""
    if case["status"] != "fulfilled" or not case["measured"] or case["fulfilled_at"] is None:
        return
    key = (
        as_utc(case["fulfilled_at"]).date(),
        case["source"],
        case["purpose"] or "",
        case["first_channel"] or "",
        case["team"] or "",
    )
    found = deltas.setdefault(key, [0, 0, 0])
    found[0] += sign
    found[1] += sign * int(case["contacts"])
    found[2] += sign * int(bool(case["one_stop"]))


def count_case_time(deltas: Counter[CaseTimeKey], case: dict[str, Any], sign: int) -> None:
    """A case row's part of case_time_days: a fulfilled case's end-to-end time, in its band
    on the day it was fulfilled (a time is only ever set on a measured, fulfilled case)."""
    seconds = case["end_to_end_seconds"]
    if seconds is None or case["fulfilled_at"] is None:
        return
    deltas[
        (
            as_utc(case["fulfilled_at"]).date(),
            case["source"],
            case["purpose"] or "",
            case["first_channel"] or "",
            case["team"] or "",
            time_band(float(seconds)),
        )
    ] += sign


# Bands of end-to-end time, an eighth of a doubling wide (9% apart) from 1 s to 2^32 s; band
# -1 holds times under a second. The bounds are these floats, in Python and in SQL alike, so
# a time's band and the band's lower bound in a query always agree.
_BAND_BOUNDS = [2 ** (band / 8) for band in range(8 * 32 + 1)]


def time_band(seconds: float) -> int:
    """The band of an end-to-end time: _BAND_BOUNDS[band] <= seconds < the next bound."""
    return bisect_right(_BAND_BOUNDS, seconds) - 1


def band_floor(band: int) -> float | None:
    """The least time of a band (None for band -1: no lower bound)."""
    return None if band < 0 else _BAND_BOUNDS[band]


async def apply_case_time_deltas(session: AsyncSession, deltas: Counter[CaseTimeKey]) -> None:
    """case_time_days moved by the batch's net change, as apply_day_deltas moves demand_days."""
    changed = sorted(key for key, n in deltas.items() if n)
    if not changed:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CaseTimeDayRow)
    upsert = statement.on_conflict_do_update(
        index_elements=list(_CASE_TIME_COLUMNS),
        set_={"cases": CaseTimeDayRow.cases + statement.excluded.cases},
    )
    rows = [
        {**dict(zip(_CASE_TIME_COLUMNS, key, strict=True)), "cases": deltas[key]} for key in changed
    ]
    await session.execute(upsert, rows)
    emptied = [key for key in changed if deltas[key] < 0]
    columns = tuple_(*(getattr(CaseTimeDayRow, c) for c in _CASE_TIME_COLUMNS))
    for chunk in chunks(emptied):
        await session.execute(
            delete(CaseTimeDayRow).where(columns.in_(chunk), CaseTimeDayRow.cases == 0)
        )


# (fulfilled day, source, purpose, first channel, team, band): case_time_days' key.
CaseTimeKey = tuple[date, str, str, str, str, int]
_CASE_TIME_COLUMNS = ("day", "source", "purpose", "channel", "team", "band")


async def apply_case_day_deltas(session: AsyncSession, deltas: dict[CaseDayKey, list[int]]) -> None:
    """case_days moved by the batch's net change, as apply_day_deltas moves demand_days."""
    changed = sorted(key for key, counts in deltas.items() if any(counts))
    if not changed:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CaseDayRow)
    upsert = statement.on_conflict_do_update(
        index_elements=["day", "source", "purpose", "channel", "team"],
        set_={
            "fulfilled": CaseDayRow.fulfilled + statement.excluded.fulfilled,
            "contacts": CaseDayRow.contacts + statement.excluded.contacts,
            "one_stop": CaseDayRow.one_stop + statement.excluded.one_stop,
        },
    )
    names = ("day", "source", "purpose", "channel", "team")
    rows = [
        {
            **dict(zip(names, key, strict=True)),
            "fulfilled": deltas[key][0],
            "contacts": deltas[key][1],
            "one_stop": deltas[key][2],
        }
        for key in changed
    ]
    await session.execute(upsert, rows)
    emptied = [key for key in changed if deltas[key][0] < 0]
    columns = tuple_(
        CaseDayRow.day, CaseDayRow.source, CaseDayRow.purpose, CaseDayRow.channel, CaseDayRow.team
    )
    for chunk in chunks(emptied):
        await session.execute(
            delete(CaseDayRow).where(columns.in_(chunk), CaseDayRow.fulfilled == 0)
        )


# --- the daily aggregates ---------------------------------------------------------------------

# (day, source, channel, team, purpose, demand_type, failure_kind, cause_purpose,
#  machine_purpose, machine_type): demand_days' key, '' for none.
DayKey = tuple[date, str, str, str, str, str, str, str, str, str]
_DAY_KEY_COLUMNS = (
    "day",
    "source",
    "channel",
    "team",
    "purpose",
    "demand_type",
    "failure_kind",
    "cause_purpose",
    "machine_purpose",
    "machine_type",
)


@dataclass(frozen=True)
class Received:
    """What a demand's aggregates need of it as received: its first classification and
    handling time (fixed once stored: the first DemandClassified of an id is kept)."""

    purpose: str
    demand_type: str
    handling_micros: int | None


def _micros(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def day_key(fact: dict[str, Any], machine: Received) -> DayKey:
    return (
        as_utc(fact["occurred_at"]).date(),
        fact["source"],
        fact["channel"],
        fact["team"] or "",
        fact["purpose"],
        fact["demand_type"],
        fact["failure_kind"] or "",
        fact["cause_purpose"] or "",
        machine.purpose,
        machine.demand_type,
    )


async def old_day_contributions(
    session: AsyncSession,
    customers: Sequence[Customer],
    received: dict[DemandKey, Received],
    deltas: Counter[DayKey],
    measured: Counter[DayKey],
    micros: Counter[DayKey],
) -> None:
    """Subtract what these customers' facts, as stored before the swap, added to the daily
    aggregates; note each of their demands' first classification for the new facts."""
    statement = (
        select(
            Demand.source,
            Demand.demand_id,
            Demand.purpose,
            Demand.demand_type,
            Demand.handling_seconds,
            DemandFactRow.occurred_at,
            DemandFactRow.channel,
            DemandFactRow.team,
            DemandFactRow.purpose,
            DemandFactRow.demand_type,
            DemandFactRow.failure_kind,
            DemandFactRow.cause_purpose,
        )
        .outerjoin(DemandFactRow, same_demand(DemandFactRow, Demand))
        .where(tuple_(Demand.source, Demand.customer_ref).in_(customers))
    )
    for row in (await session.execute(statement)).all():
        (source, demand_id, m_purpose, m_type, seconds, at, channel, team) = row[:8]
        purpose, demand_type, kind, cause = row[8:]
        machine = Received(m_purpose, m_type, _micros(seconds))
        received[(source, demand_id)] = machine
        if at is None:  # not derived yet: received in this batch
            continue
        key = day_key(
            {
                "occurred_at": at,
                "source": source,
                "channel": channel,
                "team": team,
                "purpose": purpose,
                "demand_type": demand_type,
                "failure_kind": kind,
                "cause_purpose": cause,
            },
            machine,
        )
        deltas[key] -= 1
        if machine.handling_micros is not None:
            measured[key] -= 1
            micros[key] -= machine.handling_micros


async def apply_day_deltas(
    session: AsyncSession,
    deltas: Counter[DayKey],
    measured: Counter[DayKey],
    micros: Counter[DayKey],
) -> None:
    """Add the batch's net change to demand_days, and drop the groups left empty.

    Why deltas and not a recomputation of the touched groups from the facts: a (day,
    purpose, ...) group holds thousands of demands, so recomputing each group a batch
    touches would scan far more facts than the batch changed (a rebuild touches most days
    in every batch). The deltas are exact and idempotent because they are the difference
    between a customer's facts before and after replace_derived's own swap, in the same
    transaction, under the customer's lock: a redelivered or reordered event that leaves a
    customer's facts as they were moves nothing, so the aggregates stay a pure function of
    the set of events, equal to a recomputation from the facts (which tests check).
    Counts and microseconds are integers, so the sums do not depend on the order either.
    Concurrent batches of other customers add to the same row with one atomic upsert.
    """
    changed = [k for k in deltas.keys() | micros.keys() if deltas[k] or measured[k] or micros[k]]
    if not changed:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DemandDayRow)
    upsert = statement.on_conflict_do_update(
        index_elements=list(_DAY_KEY_COLUMNS),
        set_={
            "demands": DemandDayRow.demands + statement.excluded.demands,
            "handling_measured": DemandDayRow.handling_measured
            + statement.excluded.handling_measured,
            "handling_micros": DemandDayRow.handling_micros + statement.excluded.handling_micros,
        },
    )
    rows = [
        {
            **dict(zip(_DAY_KEY_COLUMNS, key, strict=True)),
            "demands": deltas[key],
            "handling_measured": measured[key],
            "handling_micros": micros[key],
        }
        for key in sorted(changed)
    ]
    await session.execute(upsert, rows)
    emptied = [k for k in changed if deltas[k] < 0]
    columns = tuple_(*(getattr(DemandDayRow, c) for c in _DAY_KEY_COLUMNS))
    for chunk in chunks(sorted(emptied)):
        await session.execute(
            delete(DemandDayRow).where(columns.in_(chunk), DemandDayRow.demands == 0)
        )
