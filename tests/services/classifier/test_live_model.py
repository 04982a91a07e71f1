"""The live model of a fleet of classifier instances on one database (SQLite file and
PostgreSQL): a retraining in one is served by the others within their watch interval, one
retraining at a time across the fleet, a rollback switches every instance, an expired lease is
taken over, a fresh database is trained once however many instances start, and an earlier
release's model directory is imported."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.classifier.cli import app
from services.classifier.db.migrate import upgrade
from services.classifier.db.model_versions import ModelVersions
from services.classifier.db.repository import LabelRepository
from services.classifier.live_model import ModelInUse, ModelKeeper, RetrainInProgress
from services.classifier.model import store
from services.classifier.training import TrainedModel, TrainingSources
from services.classifier.versions import TRAINING_LEASE
from shared.database.engine import create_engine
from shared.events.classification import DemandType
from tests.services.classifier.conftest import store_version
from tests.support.factories import demand_labelled
from tests.support.waiting import wait_until

MOVING_LABEL = demand_labelled(
    id="L1",
    demand_id="D1",
    demand_type=DemandType.FAILURE,
    failure_kind="repeat",
    purpose="moving home",
    text="calling about the move yet again",
)
WATCH_S = 0.05


@dataclass
class Instance:
    """One classifier instance of the fleet: its own engine and keeper, the swaps it made."""

    keeper: ModelKeeper
    labels: LabelRepository
    swaps: list[ModelInUse] = field(default_factory=list)
    watching: asyncio.Task[None] | None = None

    @property
    def served(self) -> str:
        return self.keeper.current.version


Fleet = Callable[..., Instance]


@pytest.fixture
async def migrated(database_url: str) -> str:
    await asyncio.to_thread(upgrade, database_url)
    return database_url


@pytest.fixture
def small_sources(examples_csv: Path, general_corpus_csv: Path) -> TrainingSources:
    """Seconds of training at most: the tiny examples, the shipped taxonomy, a tiny corpus."""
    return TrainingSources(seed_examples=examples_csv, general_corpus=general_corpus_csv)


@pytest.fixture
async def fleet(
    migrated: str, small_sources: TrainingSources
) -> AsyncIterator[Callable[..., Instance]]:
    """``fleet(name, ...)``: a new instance on the test's one database."""
    made: list[Instance] = []

    def instance(
        name: str,
        *,
        clock_offset: timedelta = timedelta(0),
        sources: TrainingSources | None = None,
        import_dir: Path | None = None,
        watch: bool = False,
    ) -> Instance:
        engine = create_engine(migrated)
        swaps: list[ModelInUse] = []
        labels = LabelRepository(engine)
        keeper = ModelKeeper(
            versions=ModelVersions(engine, clock=lambda: datetime.now(UTC) + clock_offset),
            sources=sources or small_sources,
            labels=labels,
            holder=name,
            watch_interval_s=WATCH_S,
            retrain_interval_s=0,
            on_swap=swaps.append,
            lease_ttl_s=30,
            import_dir=import_dir,
        )
        member = Instance(keeper, labels, swaps)
        made.append(member)
        return member

    try:
        yield instance
    finally:
        for member in made:
            if member.watching is not None:
                member.watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await member.watching
            await member.labels.engine.dispose()


async def start(member: Instance) -> Instance:
    await member.keeper.load()
    member.watching = asyncio.create_task(member.keeper.watch())
    return member


async def serves(member: Instance, version: str) -> None:
    await wait_until(
        lambda: _served(member), accept=lambda v: v == version, timeout=30, what=f"{version}"
    )


async def _served(member: Instance) -> str:
    return member.served


async def test_a_retraining_in_one_instance_is_served_by_the_other(
    fleet: Fleet, migrated: str, seed_model: TrainedModel
) -> None:
    first = await store_version(migrated, seed_model.model, seed_model.metadata)
    a, b = await start(fleet("a")), await start(fleet("b"))
    assert (a.served, b.served) == (first, first)
    await a.labels.add_labels([MOVING_LABEL])

    retrained = await a.keeper.retrain("command")

    assert a.served == retrained
    await serves(b, retrained)
    assert [s.version for s in b.swaps] == [first, retrained]
    metadata = await a.keeper.versions.metadata(retrained)
    assert (metadata["reason"], metadata["labels"], metadata["label_rows"]) == ("command", 1, 1)
    assert (await a.keeper.versions.list())[-1].created_by == "a"


async def test_concurrent_retrainings_in_two_instances_train_once(
    fleet: Fleet, migrated: str, seed_model: TrainedModel
) -> None:
    first = await store_version(migrated, seed_model.model, seed_model.metadata)
    a, b = await start(fleet("a")), await start(fleet("b"))

    results = await asyncio.gather(
        a.keeper.retrain("command"), b.keeper.retrain("command"), return_exceptions=True
    )

    trained = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, RetrainInProgress)]
    assert (len(trained), len(refused)) == (1, 1), results
    assert [v.version for v in await a.keeper.versions.list()] == [first, trained[0]]
    await serves(a, trained[0])
    await serves(b, trained[0])
    # Once it ended, the next one may start (the lease was released, not left to expire).
    again = await b.keeper.retrain("command")
    assert again in {v.version for v in await a.keeper.versions.list()}


async def test_a_rollback_switches_every_instance(
    fleet: Fleet, migrated: str, seed_model: TrainedModel
) -> None:
    first = await store_version(migrated, seed_model.model, seed_model.metadata)
    a, b = await start(fleet("a")), await start(fleet("b"))
    second = await a.keeper.retrain("command")
    await serves(b, second)

    rolled = await asyncio.to_thread(
        CliRunner().invoke, app, ["rollback", "--to", first, "--database-url", migrated]
    )

    assert rolled.exit_code == 0, rolled.output
    await serves(a, first)
    await serves(b, first)
    unknown = await asyncio.to_thread(
        CliRunner().invoke, app, ["rollback", "--to", "nope", "--database-url", migrated]
    )
    assert unknown.exit_code == 1
    assert await a.keeper.versions.current() == first


async def test_an_expired_lease_of_a_crashed_trainer_is_taken_over(
    fleet: Fleet, migrated: str, seed_model: TrainedModel
) -> None:
    await store_version(migrated, seed_model.model, seed_model.metadata)
    a = await start(fleet("a"))
    crashed = fleet("crashed", clock_offset=-timedelta(hours=1)).keeper.versions
    # It took the lease an hour ago for a minute, and died training.
    assert await crashed.take_lease(TRAINING_LEASE, "crashed", timedelta(minutes=1))
    alive = fleet("alive").keeper.versions
    assert await alive.take_lease(TRAINING_LEASE, "alive", timedelta(minutes=1))

    with pytest.raises(RetrainInProgress, match="alive"):  # a live holder is respected
        await a.keeper.retrain("command")
    later = await start(fleet("later", clock_offset=timedelta(minutes=2)))
    retrained = await later.keeper.retrain("command")  # "alive" is now as dead as "crashed"

    assert await a.keeper.versions.current() == retrained
    assert await later.keeper.versions.lease_holder(TRAINING_LEASE) is None  # released


async def test_a_fresh_database_is_trained_once_however_many_instances_start(
    fleet: Fleet, migrated: str
) -> None:
    a, b, c = fleet("a"), fleet("b"), fleet("c")
    await a.labels.add_labels([MOVING_LABEL])

    await asyncio.gather(a.keeper.load(), b.keeper.load(), c.keeper.load())

    stored = await a.keeper.versions.list()
    assert len(stored) == 1
    assert {a.served, b.served, c.served} == {stored[0].version}
    metadata = stored[0].metadata
    assert (metadata["reason"], metadata["labels"]) == ("bootstrap", 1)


async def test_a_model_directory_of_an_earlier_release_is_imported_not_retrained(
    fleet: Fleet, tmp_path: Path, seed_model: TrainedModel
) -> None:
    old = tmp_path / "models"
    store.write_directory_version(
        old, "20260101T0000Z-0123abcd", store.dumps(seed_model.model), seed_model.metadata
    )
    (old / store.CURRENT_FILE).write_text("20260101T0000Z-0123abcd\n")
    a = await start(fleet("a", import_dir=old, sources=TrainingSources()))

    assert a.served == "20260101T0000Z-0123abcd"
    assert [v.version for v in await a.keeper.versions.list()] == [a.served]


async def test_a_bad_current_version_keeps_the_model_in_use(
    fleet: Fleet, migrated: str, seed_model: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    first = await store_version(migrated, seed_model.model, seed_model.metadata)
    a = await start(fleet("a"))
    broken = await store_version(migrated, seed_model.model, version="broken")
    engine = create_engine(migrated)
    try:  # damage it the way a bad disk or a wrong restore would
        from sqlalchemy import text

        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE classifier_model_versions SET content_hash = 'x' WHERE version = :v"),
                {"v": broken},
            )
    finally:
        await engine.dispose()

    with pytest.raises(store.ModelStoreError, match="damaged"):
        await a.keeper.refresh()
    assert a.served == first


async def test_the_schedule_retrains_once_for_the_fleet_when_labels_arrived(
    fleet: Fleet, migrated: str, seed_model: TrainedModel
) -> None:
    first = await store_version(
        migrated, seed_model.model, {**seed_model.metadata, "label_rows": 0}
    )
    a, b = await start(fleet("a")), await start(fleet("b"))
    await a.labels.add_labels([MOVING_LABEL])

    retrained = await a.keeper.retrain_if_new_labels()
    assert retrained is not None
    assert a.served == retrained
    await serves(b, retrained)
    # b sees the version that already learnt from that label: no second one.
    assert await b.keeper.retrain_if_new_labels() is None
    assert await a.keeper.retrain_if_new_labels() is None

    assert [v.version for v in await b.keeper.versions.list()] == [first, retrained]


async def test_retrain_command_trains_on_seed_and_labels_for_the_fleet(
    fleet: Fleet,
    migrated: str,
    examples_csv: Path,
    general_corpus_csv: Path,
    seed_model: TrainedModel,
) -> None:
    await store_version(migrated, seed_model.model, seed_model.metadata)
    a = await start(fleet("a"))
    await a.labels.add_labels([MOVING_LABEL])

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        [
            "retrain",
            "--seed-examples",
            str(examples_csv),
            "--general-corpus",  # small, as small_sources: the shipped one is most of the CPU
            str(general_corpus_csv),
            "--database-url",
            migrated,
        ],
    )

    assert result.exit_code == 0, result.output
    version = await a.keeper.versions.current()
    assert version is not None
    assert version in result.output
    await serves(a, version)
    metadata = await a.keeper.versions.metadata(version)
    assert (metadata["labels"], metadata["seed_examples"], metadata["reason"]) == (1, 30, "command")
    assert metadata["evaluation"]["demand_type"]["count"] == 6


async def test_retrain_command_while_an_instance_trains_is_refused(
    fleet: Fleet, migrated: str, examples_csv: Path
) -> None:
    busy = fleet("busy").keeper.versions
    assert await busy.take_lease(TRAINING_LEASE, "busy", timedelta(minutes=1))

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["retrain", "--seed-examples", str(examples_csv), "--database-url", migrated],
    )

    assert result.exit_code == 1
    assert "already running" in result.output
    assert "busy" in result.output
    assert await busy.current() is None


def test_retrain_command_on_an_unmigrated_database_says_to_migrate(
    tmp_path: Path, examples_csv: Path
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "retrain",
            "--seed-examples",
            str(examples_csv),
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
        ],
    )

    assert result.exit_code == 1
    assert "classifier migrate" in " ".join(result.output.split())
