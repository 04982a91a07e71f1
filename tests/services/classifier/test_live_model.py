from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from services.classifier.cli import app
from services.classifier.label_store import LabelStore
from services.classifier.live_model import ModelInUse, ModelKeeper
from services.classifier.model import store
from services.classifier.training import TrainingSources
from shared.events import DemandLabelled
from shared.events.classification import DemandType


def keeper(model_dir: Path, swaps: list[ModelInUse], sources: TrainingSources) -> ModelKeeper:
    return ModelKeeper(
        model_dir=model_dir,
        sources=sources,
        labels=LabelStore(model_dir),
        watch_interval_s=0,
        retrain_interval_s=0,
        on_swap=swaps.append,
    )


async def test_a_fresh_machine_trains_a_model_from_the_seed_data(
    tmp_path: Path, examples_csv: Path
) -> None:
    swaps: list[ModelInUse] = []
    live = keeper(tmp_path, swaps, TrainingSources(seed_examples=examples_csv))

    await live.start()
    await live.stop()

    assert store.current_version(tmp_path) == live.current.version
    assert [s.version for s in swaps] == [live.current.version]
    assert store.read_metadata(tmp_path, live.current.version)["reason"] == "bootstrap"


async def test_a_new_current_version_from_another_process_is_picked_up(
    model_dir: Path,
) -> None:
    swaps: list[ModelInUse] = []
    live = keeper(model_dir, swaps, TrainingSources())
    await live.start()
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


def test_retrain_command_trains_on_seed_and_labels(tmp_path: Path, examples_csv: Path) -> None:
    labels = LabelStore(tmp_path)
    labels.add_labels(
        [
            DemandLabelled(
                id="L1",
                demand_id="D1",
                demand_type=DemandType.FAILURE,
                failure_kind="repeat",
                purpose="moving home",
                labelled_by="agent-1",
                labelled_at=datetime.now(UTC),
                text="calling about the move yet again",
            )
        ]
    )
    labels.close()

    result = CliRunner().invoke(
        app,
        ["retrain", "--model-dir", str(tmp_path), "--seed-examples", str(examples_csv)],
    )

    assert result.exit_code == 0, result.output
    version = store.current_version(tmp_path)
    assert version is not None
    metadata = store.read_metadata(tmp_path, version)
    assert (metadata["labels"], metadata["seed_examples"], metadata["reason"]) == (1, 30, "command")
    assert metadata["evaluation"]["demand_type"]["count"] == 6
