"""The daily aggregates (demand_days, case_days, case_time_days): the write path moves
them by the difference of a customer's rows before and after their swap, one upsert
(executemany) per table, inside its synchronous recomputation (sql.run_sync)."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.metrics.db.sql import SyncDb, as_utc

# (fulfilled day, source, purpose, first channel, team): case_days' key, '' for none.
CaseDayKey = tuple[date, str, str, str, str]


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


# (fulfilled day, source, purpose, first channel, team, band): case_time_days' key.
CaseTimeKey = tuple[date, str, str, str, str, int]
_CASE_TIME_COLUMNS = ("day", "source", "purpose", "channel", "team", "band")


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


def to_micros(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def _upsert(table: str, keys: Sequence[str], sums: Sequence[str]) -> str:
    """Add a row's sums to the stored row of its key, or insert it: one atomic statement,
    so concurrent batches of other customers can add to the same row."""
    columns = (*keys, *sums)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(f':{c}' for c in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
        + ", ".join(f"{s} = {table}.{s} + excluded.{s}" for s in sums)
    )


def _delete_empty(table: str, keys: Sequence[str], count: str) -> str:
    where = " AND ".join(f"{k} = :{k}" for k in keys)
    return f"DELETE FROM {table} WHERE {where} AND {count} = 0"


_DAY_SUMS = ("demands", "handling_measured", "handling_micros")
_UPSERT_DAY = _upsert("demand_days", _DAY_KEY_COLUMNS, _DAY_SUMS)
_EMPTY_DAY = _delete_empty("demand_days", _DAY_KEY_COLUMNS, "demands")
_CASE_DAY_KEY_COLUMNS = ("day", "source", "purpose", "channel", "team")
_CASE_DAY_SUMS = ("fulfilled", "contacts", "one_stop")
_UPSERT_CASE_DAY = _upsert("case_days", _CASE_DAY_KEY_COLUMNS, _CASE_DAY_SUMS)
_EMPTY_CASE_DAY = _delete_empty("case_days", _CASE_DAY_KEY_COLUMNS, "fulfilled")
_UPSERT_CASE_TIME = _upsert("case_time_days", _CASE_TIME_COLUMNS, ("cases",))
_EMPTY_CASE_TIME = _delete_empty("case_time_days", _CASE_TIME_COLUMNS, "cases")


def _key(db: SyncDb, names: Sequence[str], key: tuple[Any, ...]) -> dict[str, Any]:
    """A key's columns by name, its day (always first) in the database's form."""
    row = dict(zip(names, key, strict=True))
    row["day"] = db.day(key[0])
    return row


def apply_day_deltas(
    db: SyncDb,
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
    changed = sorted(
        k for k in deltas.keys() | micros.keys() if deltas[k] or measured[k] or micros[k]
    )
    rows = [
        {
            **_key(db, _DAY_KEY_COLUMNS, key),
            "demands": deltas[key],
            "handling_measured": measured[key],
            "handling_micros": micros[key],
        }
        for key in changed
    ]
    db.executemany(_UPSERT_DAY, rows)
    db.executemany(_EMPTY_DAY, [_key(db, _DAY_KEY_COLUMNS, k) for k in changed if deltas[k] < 0])


def apply_case_day_deltas(db: SyncDb, deltas: dict[CaseDayKey, list[int]]) -> None:
    """case_days moved by the batch's net change, as apply_day_deltas moves demand_days."""
    changed = sorted(key for key, counts in deltas.items() if any(counts))
    rows = [
        {
            **_key(db, _CASE_DAY_KEY_COLUMNS, key),
            "fulfilled": deltas[key][0],
            "contacts": deltas[key][1],
            "one_stop": deltas[key][2],
        }
        for key in changed
    ]
    db.executemany(_UPSERT_CASE_DAY, rows)
    db.executemany(
        _EMPTY_CASE_DAY,
        [_key(db, _CASE_DAY_KEY_COLUMNS, k) for k in changed if deltas[k][0] < 0],
    )


def apply_case_time_deltas(db: SyncDb, deltas: Counter[CaseTimeKey]) -> None:
    """case_time_days moved by the batch's net change, as apply_day_deltas moves demand_days."""
    changed = sorted(key for key, n in deltas.items() if n)
    rows = [{**_key(db, _CASE_TIME_COLUMNS, key), "cases": deltas[key]} for key in changed]
    db.executemany(_UPSERT_CASE_TIME, rows)
    db.executemany(
        _EMPTY_CASE_TIME, [_key(db, _CASE_TIME_COLUMNS, k) for k in changed if deltas[k] < 0]
    )
