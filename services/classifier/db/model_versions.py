"""Every query on the model versions the classifier fleet shares, the current pointer and the
training lease.

A version is written once and never changed; "current" is one row, so every instance asks the
same question (``current``, one primary-key read) and gets the same answer. The lease is taken
with a conditional write that SQLite and PostgreSQL both make atomic: an INSERT that does
nothing if the row exists, then an UPDATE that only succeeds when the lease has expired.
Expiry is judged by the callers' clocks (UTC), so keep the lease much longer than the clock
skew between machines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.classifier.db.model_tables import (
    CURRENT_ROW,
    CurrentModelRow,
    LeaseRow,
    ModelVersionRow,
)

_VERSIONS: Table = ModelVersionRow.__table__  # type: ignore[assignment]
_CURRENT: Table = CurrentModelRow.__table__  # type: ignore[assignment]
_LEASES: Table = LeaseRow.__table__  # type: ignore[assignment]

Clock = Callable[[], datetime]


class UnknownVersion(LookupError):
    pass


class LeaseLost(RuntimeError):
    """The lease expired and may be another's: this holder's work must not be published."""


@dataclass(frozen=True, slots=True)
class NewVersion:
    version: str
    created_by: str
    reason: str
    content_hash: str
    model_format: int
    metadata: dict[str, Any]
    payload: bytes
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    created_at: datetime
    created_by: str
    reason: str
    content_hash: str
    metadata: dict[str, Any]
    is_current: bool


@dataclass(frozen=True, slots=True)
class StoredModel:
    version: str
    content_hash: str
    metadata: dict[str, Any]
    payload: bytes


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    expires_at: datetime


class ModelVersions:
    """The shared model versions on one engine (SQLite or PostgreSQL); each method is one
    transaction. ``clock`` is injectable so tests can step past a lease's expiry."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    # -- versions and the current pointer -----------------------------------------------------

    async def current(self) -> str | None:
        """The fleet's current version: the cheap read every instance polls."""
        async with self._engine.connect() as connection:
            found = await connection.scalar(
                select(_CURRENT.c.version).where(_CURRENT.c.id == CURRENT_ROW)
            )
        return None if found is None else str(found)

    async def count(self) -> int:
        async with self._engine.connect() as connection:
            counted = await connection.scalar(select(func.count()).select_from(_VERSIONS))
        return int(counted or 0)

    async def get(self, version: str) -> StoredModel:
        columns = _VERSIONS.c
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        columns.version, columns.content_hash, columns.metadata, columns.model
                    ).where(columns.version == version)
                )
            ).first()
        if row is None:
            raise UnknownVersion(version)
        return StoredModel(row[0], row[1], dict(row[2] or {}), bytes(row[3]))

    async def metadata(self, version: str) -> dict[str, Any]:
        async with self._engine.connect() as connection:
            found = await connection.scalar(
                select(_VERSIONS.c.metadata).where(_VERSIONS.c.version == version)
            )
        if found is None:
            raise UnknownVersion(version)
        return dict(found)

    async def list(self) -> list[VersionInfo]:
        """Every version without its bytes, oldest first; the current one is marked."""
        columns = _VERSIONS.c
        query = select(
            columns.version,
            columns.created_at,
            columns.created_by,
            columns.reason,
            columns.content_hash,
            columns.metadata,
        ).order_by(columns.created_at, columns.version)
        async with self._engine.connect() as connection:
            current = await connection.scalar(
                select(_CURRENT.c.version).where(_CURRENT.c.id == CURRENT_ROW)
            )
            rows = (await connection.execute(query)).all()
        return [
            VersionInfo(
                version=row[0],
                created_at=_as_utc(row[1]),
                created_by=row[2],
                reason=row[3],
                content_hash=row[4],
                metadata=dict(row[5] or {}),
                is_current=row[0] == current,
            )
            for row in rows
        ]

    async def add(
        self,
        new: NewVersion,
        *,
        make_current: bool = True,
        lease: Lease | None = None,
        lease_ttl: timedelta | None = None,
    ) -> None:
        """Store ``new`` (a version already stored is left as it is) and, by default, make it
        current for the fleet. With ``lease``, only while that lease is still held: checked in
        the same transaction, so a holder whose lease ran out publishes nothing (LeaseLost)."""
        now = self.now()
        async with self._engine.begin() as connection:
            if lease is not None:  # first, so SQLite takes its write lock before any read
                kept = await _extend(connection, lease.name, lease.holder, now, lease_ttl)
                if not kept:
                    raise LeaseLost(f"the {lease.name} lease of {lease.holder} expired")
            await connection.execute(
                _insert(connection, _VERSIONS).on_conflict_do_nothing(index_elements=["version"]),
                [_version_row(new, now)],
            )
            if make_current:
                await _point(connection, new.version, new.created_by, new.reason, now)

    async def make_current(self, version: str, *, by: str, reason: str) -> None:
        """Point the fleet at a stored version (a rollback, or forward again)."""
        try:
            async with self._engine.begin() as connection:
                # The write first, so SQLite takes its write lock before any read.
                await _point(connection, version, by, reason, self.now())
                known = await connection.scalar(
                    select(_VERSIONS.c.version).where(_VERSIONS.c.version == version)
                )
                if known is None:  # SQLite does not check the foreign key
                    raise UnknownVersion(version)  # rolls the pointer back
        except IntegrityError as error:  # PostgreSQL does
            raise UnknownVersion(version) from error

    async def prune(self, keep: int) -> tuple[str, ...]:
        """Delete every version but the ``keep`` newest and the current one (a rollback may
        have pointed at an older one); returns the versions deleted, oldest first. One
        statement, so a rollback meanwhile either sees the version or finds it gone (the
        current pointer's foreign key on PostgreSQL; ``make_current`` checks it on SQLite)."""
        if keep < 1:
            raise ValueError("keep at least one version")
        columns = _VERSIONS.c
        newest = (
            select(columns.version)
            .order_by(columns.created_at.desc(), columns.version.desc())
            .limit(keep)
        )
        current = select(_CURRENT.c.version).where(_CURRENT.c.id == CURRENT_ROW)
        async with self._engine.begin() as connection:
            deleted = await connection.execute(
                delete(_VERSIONS)
                .where(
                    columns.version.not_in(newest.scalar_subquery()),
                    columns.version.not_in(current.scalar_subquery()),
                )
                .returning(columns.version, columns.created_at)
            )
            rows = deleted.all()
        return tuple(row[0] for row in sorted(rows, key=lambda row: (_as_utc(row[1]), row[0])))

    async def import_versions(
        self, versions: Sequence[NewVersion], *, current: str | None, by: str
    ) -> int:
        """Add the versions not stored yet; point at ``current`` only if nothing is current
        (an import never overrides the fleet's choice). Returns how many were new."""
        now = self.now()
        async with self._engine.begin() as connection:
            added = 0
            for new in versions:
                inserted = await connection.execute(
                    _insert(connection, _VERSIONS)
                    .on_conflict_do_nothing(index_elements=["version"])
                    .returning(_VERSIONS.c.version),
                    [_version_row(new, now)],
                )
                added += len(inserted.all())
            if current is not None:
                await connection.execute(
                    _insert(connection, _CURRENT).on_conflict_do_nothing(index_elements=["id"]),
                    [_pointer_row(current, by, "import", now)],
                )
        return added

    # -- the lease ------------------------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, ttl: timedelta) -> Lease | None:
        """The lease ``name`` for ``holder`` until now + ``ttl``, or None while another (or
        this holder already) has it unexpired."""
        now = self.now()
        expires_at = now + ttl
        async with self._engine.begin() as connection:
            inserted = await connection.execute(
                _insert(connection, _LEASES)
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(_LEASES.c.name),
                [{"name": name, "holder": holder, "taken_at": now, "expires_at": expires_at}],
            )
            if not inserted.all():
                taken = await connection.execute(
                    update(_LEASES)
                    .where(_LEASES.c.name == name, _LEASES.c.expires_at <= now)
                    .values(holder=holder, taken_at=now, expires_at=expires_at)
                )
                if int(getattr(taken, "rowcount", 0) or 0) != 1:
                    return None
        return Lease(name, holder, expires_at)

    async def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        """Extend a held lease to now + ``ttl``; None if it expired (it may be another's)."""
        now = self.now()
        async with self._engine.begin() as connection:
            if not await _extend(connection, lease.name, lease.holder, now, ttl):
                return None
        return Lease(lease.name, lease.holder, now + ttl)

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up at once (only if still this holder's)."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(_LEASES)
                .where(_LEASES.c.name == lease.name, _LEASES.c.holder == lease.holder)
                .values(expires_at=self.now())
            )

    async def lease_holder(self, name: str) -> Lease | None:
        """Who holds ``name`` now (None: nobody, or only an expired holder)."""
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(_LEASES.c.holder, _LEASES.c.expires_at).where(
                        _LEASES.c.name == name, _LEASES.c.expires_at > self.now()
                    )
                )
            ).first()
        return None if row is None else Lease(name, row[0], _as_utc(row[1]))


async def _extend(
    connection: AsyncConnection, name: str, holder: str, now: datetime, ttl: timedelta | None
) -> bool:
    """Extend the holder's unexpired lease (by nothing when ``ttl`` is None); False if lost."""
    extended = await connection.execute(
        update(_LEASES)
        .where(_LEASES.c.name == name, _LEASES.c.holder == holder, _LEASES.c.expires_at > now)
        .values(expires_at=now + ttl if ttl is not None else _LEASES.c.expires_at)
    )
    return int(getattr(extended, "rowcount", 0) or 0) == 1


async def _point(
    connection: AsyncConnection, version: str, by: str, reason: str, now: datetime
) -> None:
    row = _pointer_row(version, by, reason, now)
    statement = _insert(connection, _CURRENT)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={
                key: statement.excluded[key]
                for key in ("version", "changed_at", "changed_by", "reason")
            },
        ),
        [row],
    )


def _pointer_row(version: str, by: str, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "id": CURRENT_ROW,
        "version": version,
        "changed_at": now,
        "changed_by": by[:200],
        "reason": reason[:200],
    }


def _version_row(new: NewVersion, now: datetime) -> dict[str, Any]:
    return {
        "version": new.version,
        "created_at": (new.created_at or now).astimezone(UTC),
        "created_by": new.created_by[:200],
        "reason": new.reason[:200],
        "content_hash": new.content_hash,
        "model_format": new.model_format,
        "metadata": new.metadata,
        "model": new.payload,
    }


def _insert(connection: AsyncConnection, table: Table) -> Any:
    """INSERT with ON CONFLICT available, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _as_utc(moment: datetime) -> datetime:
    """SQLite gives stored times back without their offset; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
