"""Building blocks every query module of the metrics service uses: the keys, UTC times
read back from SQLite, chunks under SQLite's parameter cap, insert-or-ignore, and
``run_sync``: a batch's database work as one synchronous function (the write path's)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from pydantic_core import TzInfo
from sqlalchemy import Connection, String, TextClause, and_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from shared.database.sqlite_thread import on_sqlite_thread
from shared.database.times import as_utc as as_utc  # metrics reads it from here too

# SQLite caps the bound parameters of one statement; stay well below it.
_CHUNK = 400

# A customer is the source's own reference: (source, customer_ref). A demand is (source, id).
Customer = tuple[str, str]
DemandKey = tuple[str, str]


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


# The sources that have stored demands, each found by one seek of the key (source,
# demand_id) from the last: a loose index scan, on both databases. A demand looked up by its
# id alone (an old label's, a queue item named without its source) is then a search of the
# key per source; the demands have no index by id alone (every insert would pay for one).
DEMAND_SOURCES = (
    "WITH RECURSIVE demand_sources(source) AS ("
    "SELECT min(source) FROM demands UNION ALL "
    "SELECT (SELECT min(n.source) FROM demands n WHERE n.source > s.source) "
    "FROM demand_sources s WHERE s.source IS NOT NULL) "
    "SELECT source FROM demand_sources WHERE source IS NOT NULL"
)


def demand_sources() -> Any:
    """DEMAND_SOURCES as a SELECT to use in ``column.in_(...)``."""
    return text(DEMAND_SOURCES).columns(source=String())


def same_demand(table: Any, other: Any, *, source: str = "source") -> Any:
    """``table`` and ``other`` name one demand: its source and its id."""
    return and_(getattr(table, source) == other.source, table.demand_id == other.demand_id)


def _table(table: Any) -> Any:
    """The Core table of a mapped class (a Table is itself)."""
    return getattr(table, "__table__", table)


# --- the write path's database work in one synchronous function -----------------------------

T = TypeVar("T")


class SyncDb(Protocol):
    """The batch's transaction, used synchronously: SQL written once with ``:name``
    parameters (both sqlite3 and SQLAlchemy's text() read them), values in and out in the
    form this database stores (``time``/``day`` going in, ``read_time``/``read_day`` coming
    back: text on SQLite, datetime and date on PostgreSQL)."""

    dialect: str

    def rows(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Any]: ...
    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None: ...
    def executemany(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> None: ...
    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None: ...
    def time(self, moment: datetime) -> Any: ...
    def day(self, day: date) -> Any: ...
    def read_time(self, value: Any) -> datetime: ...
    def read_day(self, value: Any) -> date: ...


def _null(value: None) -> None:
    return None


def bind_plainly() -> None:
    """sqlite3 binds an int, float, str or bytearray of its exact type at once, but takes
    anything else, None and a bool included, through its adaptation protocol first: a look-up
    in its adapters and, finding none, a failed look-up of ``__adapt__`` on its protocol and
    of ``__conform__`` on the value's class, each an AttributeError made and dropped, before
    it binds the value as it is (None as NULL, a bool as its int). The write path binds ~19
    of them an event (a demand's missing team, kind and cause, facts' and cases' flags): 5%
    of the live path's instructions. Registered adapters find them in the first look-up and
    give what was bound before: NULL for None, 0 or 1 for a bool (``int``). Idempotent;
    sqlite3's adapters are the process's, so every sqlite3 connection binds them the same
    way, and as before. It replaces any adapter for None or bool registered before it
    (nothing in this project or its dependencies registers one)."""
    adapters = sqlite3.adapters
    protocol = sqlite3.PrepareProtocol
    if adapters.get((type(None), protocol)) is not _null:
        sqlite3.register_adapter(type(None), _null)
    if adapters.get((bool, protocol)) is not int:
        sqlite3.register_adapter(bool, int)


class SqliteDb:
    """sqlite3 itself, on aiosqlite's own thread: no SQLAlchemy compile or result
    processing, and no thread hop, per statement. Times are stored as SQLAlchemy stores them
    (text that sorts as time), so every other query, through SQLAlchemy, reads them alike."""

    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        bind_plainly()
        self._connection = connection
        # Each time read back, with its stored text: a recomputed case's times are its
        # demands' and events' as read, so writing them back looks the text up instead of
        # formatting it again (a dict lookup against ~1.6 µs a time).
        self._texts: dict[datetime, str] = {}

    def rows(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return self._connection.execute(statement, params or {}).fetchall()

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        self._connection.execute(statement, params or {})

    def executemany(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._connection.executemany(statement, rows)

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert-or-ignore of rows given as tuples in ``columns``' order: bound by position,
        not looked up by name in a dict per row and column (about half of sqlite3's binding)."""
        if rows:
            self._connection.executemany(_positional_insert(table, tuple(columns)), rows)

    def changes(self) -> int:
        """The rows inserted, updated or deleted on this connection since it was opened
        (sqlite3's total_changes): an insert-or-ignore's rows ignored are not counted."""
        return self._connection.total_changes

    def time(self, moment: datetime) -> str:
        text = self._texts.get(moment)
        return format_time(moment) if text is None else text

    def read_time(self, value: Any) -> datetime:
        moment = parse_time(value)
        if len(value) == 26 and value[10] == " ":  # as format_time writes it, and no offset
            self._texts[moment] = value
        return moment

    @staticmethod
    def day(day: date) -> str:
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"

    @staticmethod
    def read_day(value: Any) -> date:
        return date.fromisoformat(value)


class AlchemyDb:
    """A SQLAlchemy connection (PostgreSQL: asyncpg has no thread between the loop and the
    socket, so run_sync costs no hop), with the same SQL through text()."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.dialect = connection.dialect.name

    def rows(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return list(self._connection.execute(_text(statement), dict(params or {})).all())

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        self._connection.execute(_text(statement), dict(params or {}))

    def executemany(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._connection.execute(_text(statement), [dict(row) for row in rows])

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        self.executemany(
            insert_ignoring_sql(table, columns),
            [dict(zip(columns, row, strict=True)) for row in rows],
        )

    @staticmethod
    def time(moment: datetime) -> datetime:
        return as_utc(moment)

    @staticmethod
    def day(day: date) -> date:
        return day

    @staticmethod
    def read_time(value: Any) -> datetime:
        return as_utc(value) if isinstance(value, datetime) else parse_time(value)

    @staticmethod
    def read_day(value: Any) -> date:
        return value if isinstance(value, date) else date.fromisoformat(value)


def stored_forms(dialect: str) -> tuple[Callable[[datetime], Any], Callable[[date], Any]]:
    """``time`` and ``day`` of the SyncDb of ``dialect``, with no connection: for values
    made ready to store away from it (a rebuild's workers). SqliteDb's ``time`` formats
    what it has not read back, and these values are new."""
    if dialect == "sqlite":
        return format_time, SqliteDb.day
    return AlchemyDb.time, AlchemyDb.day


def format_time(moment: datetime) -> str:
    """'YYYY-MM-DD HH:MM:SS.ffffff' of the UTC time, as SQLAlchemy writes it on SQLite. By
    the offset and a cut rather than astimezone and replace: a decoded event's zone is
    pydantic's TzInfo, not datetime.UTC, and each of those made a new datetime (a third
    slower)."""
    # A fixed zone's offset is the same for every time: kept with the zone last seen, and
    # taken for the same zone object, not asked again (~2k instructions into pydantic-core a
    # call). It hits for UTC senders: pydantic-core decodes "Z" and "+00:00" to one shared
    # TzInfo (other offsets get an object each). A zone whose offset changes with the date
    # (ZoneInfo) is asked every time. One tuple, read and replaced whole: two threads calling
    # it see a zone with its own offset.
    zone = moment.tzinfo
    last = _last_zone
    if zone is last[0]:
        offset = last[1]
    else:
        offset = moment.utcoffset()
        if type(zone) in FIXED_ZONES:
            _remember_zone(zone, offset)
    if offset:
        moment = moment - offset
    # The date's and the time's text, which carry no zone: the datetime's own isoformat
    # asks the zone for its offset again and writes it, to be cut off (1.4 -> 1.0 µs). The
    # date's text is kept per day: a batch's times fall on a few days, and date.isoformat
    # (PyUnicode_FromFormat, a sprintf per field) was a quarter of the call's instructions.
    day = moment.date()
    text = _DAY_TEXTS.get(day)
    if text is None:
        if len(_DAY_TEXTS) >= _DAYS_KEPT:
            _DAY_TEXTS.clear()
        text = _DAY_TEXTS[day] = day.isoformat()
    return f"{text} {moment.time().isoformat('microseconds')}"


# format_time's last fixed zone and its offset ((None, None): a time without a zone, whose
# utcoffset is None). Zones whose offset is fixed: pydantic's and datetime's own.
FIXED_ZONES: tuple[type[tzinfo], ...] = (TzInfo, timezone)
_last_zone: tuple[tzinfo | None, timedelta | None] = (None, None)


def _remember_zone(zone: tzinfo | None, offset: timedelta | None) -> None:
    global _last_zone
    _last_zone = (zone, offset)


# format_time's date texts, by day (at most _DAYS_KEPT: then cleared and refilled).
_DAY_TEXTS: dict[date, str] = {}
_DAYS_KEPT = 4096


def parse_time(value: Any) -> datetime:
    """A time stored as text on SQLite, in UTC. Parsed with an offset added, not parsed then
    replaced, which took five times as long (0.94 -> 0.19 µs); the zone is datetime.UTC alike."""
    try:
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:  # text with an offset of its own: as before, taken as UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)


def insert_ignoring_sql(table: str, columns: Sequence[str]) -> str:
    """INSERT ... ON CONFLICT DO NOTHING with ``:name`` parameters (sqlite3 and text())."""
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"


@lru_cache(maxsize=64)
def _positional_insert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING"


@lru_cache(maxsize=256)
def _text(statement: str) -> TextClause:
    return text(statement)


async def run_sync(session: AsyncSession, work: Callable[[SyncDb], T]) -> T:
    """``work`` on the session's connection and transaction, in one go: on SQLite as one
    function on aiosqlite's thread (one hop for all its statements, not one per statement),
    elsewhere through ``AsyncConnection.run_sync``. sqlite3's errors come out as SQLAlchemy's
    (DBAPIError and its kinds), as every other statement's do, for the handler to judge."""
    connection = await session.connection()
    if connection.dialect.name != "sqlite":
        return await connection.run_sync(lambda sync: work(AlchemyDb(sync)))
    return await on_sqlite_thread(connection, lambda raw: work(SqliteDb(raw)))
