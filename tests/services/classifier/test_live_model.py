import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.classifier.cli import app
from services.classifier.db.repository import LabelRepository
from services.classifier.live_model import ModelInUse, ModelKeeper, RetrainInProgress
from services.classifier.model import store
from services.classifier.training import TrainingSources
from shared.database.engine import create_engine
from shared.events.classification import DemandType
from tests.support.factories import demand_labelled


@pytest.fixture
async def labels(labels_url: str) -> AsyncIterator[LabelRepository]:
    engine = create_engine(labels_url)
    try:
        yield LabelRepository(engine)
    finally:
        await engine.dispose()


def keeper(
    model_dir: Path, swaps: list[ModelInUse], sources: TrainingSources, labels: LabelRepository
) -> ModelKeeper:
    return ModelKeeper(
        model_dir=model_dir,
        sources=sources,
        labels=labels,
        watch_interval_s=0,
        retrain_interval_s=0,
        on_swap=swaps.append,
    )


MOVING_LABEL = demand_labelled(
    id="L1",
    demand_id="D1",
    demand_type=DemandType.FAILURE,
    failure_kind="repeat",
    purpose="moving home",
    text="calling about the move yet again",
)


async def test_a_fresh_machine_trains_a_model_from_the_seed_data(
    tmp_path: Path, examples_csv: Path, labels: LabelRepository
) -> None:
    swaps: list[ModelInUse] = []
    await labels.add_labels([MOVING_LABEL])
    live = keeper(tmp_path, swaps, TrainingSources(seed_examples=examples_csv), labels)

    await live.load()

    assert store.current_version(tmp_path) == live.current.version
    assert [s.version for s in swaps] == [live.current.version]
    metadata = store.read_metadata(tmp_path, live.current.version)
    assert (metadata["reason"], metadata["labels"]) == ("bootstrap", 1)


async def test_a_new_current_version_from_another_process_is_picked_up(
    model_dir: Path, labels: LabelRepository
) -> None:
    swaps: list[ModelInUse] = []
    live = keeper(model_dir, swaps, TrainingSources(), labels)
    await live.load()
    first = live.current.version
    assert not await live.refresh()  # nothing changed

    model = store.load(model_dir, first)
    second = store.save(
        model, model_dir, {"reason": "elsewhere"}, now=datetime(2030, 1, 1, tzinfo=UTC)
    )

    assert await live.refresh()
    assert live.current.version == second
    store.rollback(model_dir, first)
    assert await live.refresh()
    assert [s.version for s in swaps] == [first, second, first]


async def test_one_retraining_at_a_time(
    tmp_path: Path, examples_csv: Path, labels: LabelRepository
) -> None:
    swaps: list[ModelInUse] = []
    live = keeper(tmp_path, swaps, TrainingSources(seed_examples=examples_csv), labels)
    await live.load()

    first = asyncio.create_task(live.retrain("command", wait=False))
    await asyncio.sleep(0)  # the first has the lock and is training in its thread
    assert live.retraining
    with pytest.raises(RetrainInProgress):
        await live.retrain("command", wait=False)
    queued = asyncio.create_task(live.retrain("schedule"))  # the schedule waits its turn
    await first
    assert not queued.done()  # still waiting for the first to finish, or training itself
    await queued
    assert not live.retraining
    assert len(swaps) == 3  # load, then one retraining after the other


async def test_retrain_command_trains_on_seed_and_labels(
    tmp_path: Path, examples_csv: Path, labels: LabelRepository, labels_url: str
) -> None:
    await labels.add_labels([MOVING_LABEL])

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        [
            "retrain",
            "--model-dir",
            str(tmp_path / "models"),
            "--seed-examples",
            str(examples_csv),
            "--database-url",
            labels_url,
        ],
    )

    assert result.exit_code == 0, result.output
    version = store.current_version(tmp_path / "models")
    assert version is not None
    metadata = store.read_metadata(tmp_path / "models", version)
    assert (metadata["labels"], metadata["seed_examples"], metadata["reason"]) == (1, 30, "command")
    assert metadata["evaluation"]["demand_type"]["count"] == 6


def test_retrain_command_on_an_unmigrated_database_says_to_migrate(
    tmp_path: Path, examples_csv: Path
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "retrain",
            "--model-dir",
            str(tmp_path / "models"),
            "--seed-examples",
            str(examples_csv),
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
        ],
    )

    assert result.exit_code == 1
    assert "classifier migrate" in " ".join(result.output.split())
    assert store.current_version(tmp_path / "models") is None
