"""The fleet's shared model versions, current pointer and training lease, on SQLite and
PostgreSQL: one holder at a time, an expired lease taken over, a lost lease publishes nothing,
and an earlier release's model directory imported once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.classifier.db.migrate import upgrade
from services.classifier.db.model_versions import (
    LeaseLost,
    ModelVersions,
    NewVersion,
    UnknownVersion,
)
from services.classifier.model import store
from services.classifier.training import TrainedModel
from services.classifier.versions import import_directory
from shared.database.engine import create_engine

MINUTE = timedelta(minutes=1)


def version(name: str, payload: bytes = b"not a model") -> NewVersion:
    return NewVersion(
        version=name,
        created_by="test",
        reason="test",
        content_hash=store.content_hash(payload),
        model_format=0,
        metadata={"name": name},
        payload=payload,
    )


@pytest.fixture
async def migrated(database_url: str) -> str:
    await asyncio.to_thread(upgrade, database_url)
    return database_url


@pytest.fixture
async def opened(
    migrated: str,
) -> AsyncIterator[Callable[[timedelta], ModelVersions]]:
    """``opened(offset)``: the database through an engine of its own and a clock ``offset``
    from now, as another instance of the fleet would see it."""
    engines = []

    def open_one(offset: timedelta = timedelta(0)) -> ModelVersions:
        engine = create_engine(migrated)
        engines.append(engine)
        return ModelVersions(engine, clock=lambda: datetime.now(UTC) + offset)

    try:
        yield open_one
    finally:
        for engine in engines:
            await engine.dispose()


async def test_one_holder_at_a_time_and_an_expired_lease_is_taken_over(
    opened: Callable[..., ModelVersions],
) -> None:
    a, b = opened(), opened()
    held = await a.take_lease("training", "a", MINUTE)
    assert held is not None

    assert await b.take_lease("training", "b", MINUTE) is None
    assert await a.take_lease("training", "a", MINUTE) is None  # not re-entrant either
    assert (await b.lease_holder("training")) == held
    renewed = await a.renew_lease(held, MINUTE)
    assert renewed is not None

    later = opened(timedelta(minutes=5))  # a holds it for a minute: "a" crashed meanwhile
    assert await later.lease_holder("training") is None
    taken = await later.take_lease("training", "b", MINUTE)
    assert taken is not None
    assert taken.holder == "b"
    assert await a.renew_lease(renewed, MINUTE) is None  # "a" comes back: it is b's now


async def test_a_holder_whose_lease_ran_out_publishes_nothing(
    opened: Callable[..., ModelVersions],
) -> None:
    a = opened()
    first = await a.take_lease("training", "a", MINUTE)
    assert first is not None
    await a.add(version("v1"), lease=first, lease_ttl=MINUTE)
    await a.release_lease(first)
    stalled = await a.take_lease("training", "a", MINUTE)
    assert stalled is not None

    later = opened(timedelta(minutes=5))
    assert await later.take_lease("training", "b", MINUTE) is not None
    with pytest.raises(LeaseLost):
        await a.add(version("v2"), lease=stalled, lease_ttl=MINUTE)

    assert await a.current() == "v1"
    assert [v.version for v in await a.list()] == ["v1"]


async def test_concurrent_takers_on_two_engines_get_exactly_one_lease(
    opened: Callable[..., ModelVersions],
) -> None:
    fleet = [opened() for _ in range(4)]

    for round_ in range(5):
        leases = await asyncio.gather(
            *(
                member.take_lease(f"race-{round_}", f"holder-{i}", MINUTE)
                for i, member in enumerate(fleet)
            )
        )
        assert sum(lease is not None for lease in leases) == 1, leases


async def test_current_pointer_moves_only_to_stored_versions(
    opened: Callable[..., ModelVersions],
) -> None:
    a, b = opened(), opened()
    assert await a.current() is None
    await a.add(version("v1"))
    await a.add(version("v2"))
    assert await b.current() == "v2"

    await b.make_current("v1", by="ops", reason="rollback")
    with pytest.raises(UnknownVersion):
        await b.make_current("nope", by="ops", reason="rollback")

    assert await a.current() == "v1"
    listed = await a.list()
    assert [(v.version, v.is_current) for v in listed] == [("v1", True), ("v2", False)]
    stored = await a.get("v2")
    assert (stored.payload, stored.metadata) == (b"not a model", {"name": "v2"})
    await a.add(version("v2", b"other bytes"), make_current=False)
    assert (await a.get("v2")).payload == b"not a model"  # a stored version never changes


async def test_a_model_directory_is_imported_once_and_never_overrides_current(
    opened: Callable[..., ModelVersions], tmp_path: Path, seed_model: TrainedModel
) -> None:
    payload = store.dumps(seed_model.model)
    old_dir = tmp_path / "models"
    for name in ("20260101T0000Z-aaaaaaaa", "20260102T0000Z-bbbbbbbb"):
        store.write_directory_version(old_dir, name, payload, {"created_at": "2026-01-01T00:00"})
    (old_dir / store.CURRENT_FILE).write_text("20260101T0000Z-aaaaaaaa\n")
    a = opened()

    assert await import_directory(a, old_dir, by="test") == 2
    assert await import_directory(a, old_dir, by="test") == 0
    assert await a.current() == "20260101T0000Z-aaaaaaaa"
    stored = await a.get("20260102T0000Z-bbbbbbbb")
    loaded = store.loads(stored.payload, where="test", expected_hash=stored.content_hash)
    assert loaded.purposes == seed_model.model.purposes

    await a.add(version("newer"))
    (old_dir / store.CURRENT_FILE).write_text("20260102T0000Z-bbbbbbbb\n")
    await import_directory(a, old_dir, by="test")
    assert await a.current() == "newer"


def test_damaged_bytes_are_refused(seed_model: TrainedModel) -> None:
    payload = store.dumps(seed_model.model)
    with pytest.raises(store.ModelStoreError, match="damaged"):
        store.loads(payload[:-1] + b"x", where="v", expected_hash=store.content_hash(payload))


async def test_prune_keeps_the_newest_and_the_current_one(
    opened: Callable[..., ModelVersions],
) -> None:
    for n in range(1, 6):  # v1 oldest, v5 newest
        await opened(n * MINUTE).add(version(f"v{n}"))
    fleet = opened()
    await fleet.make_current("v1", by="test", reason="rollback")

    assert await fleet.prune(keep=2) == ("v2", "v3")
    assert [v.version for v in await fleet.list()] == ["v1", "v4", "v5"]
    assert await fleet.current() == "v1"
    with pytest.raises(UnknownVersion):
        await fleet.get("v2")
    with pytest.raises(UnknownVersion):  # what was pruned cannot be made current again
        await fleet.make_current("v3", by="test", reason="rollback")
    assert await fleet.prune(keep=2) == ()
    with pytest.raises(ValueError, match="at least one"):
        await fleet.prune(keep=0)
