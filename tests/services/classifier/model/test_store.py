import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.classifier.model import store
from services.classifier.model.examples import Example
from services.classifier.model.text_model import TextModel


@pytest.fixture
def model(examples: list[Example]) -> TextModel:
    return TextModel.train(examples[:12])


def test_save_writes_a_version_and_points_current_at_it(tmp_path: Path, model: TextModel) -> None:
    version = store.save(
        model, tmp_path, {"examples": 12}, now=datetime(2026, 11, 21, 15, 30, tzinfo=UTC)
    )

    assert version.startswith("20261121T1530Z-")
    assert store.current_version(tmp_path) == version
    metadata = json.loads((tmp_path / "versions" / version / "metadata.json").read_text())
    assert metadata["examples"] == 12
    assert metadata["version"] == version
    loaded_version, loaded = store.load_current(tmp_path)
    assert loaded_version == version
    assert loaded.predict("pay my bill").purpose == model.predict("pay my bill").purpose


def test_rollback_moves_current_to_an_earlier_version(
    tmp_path: Path, model: TextModel, examples: list[Example]
) -> None:
    first = store.save(model, tmp_path, {"n": 1}, now=datetime(2026, 1, 1, tzinfo=UTC))
    second = store.save(
        TextModel.train(examples), tmp_path, {"n": 2}, now=datetime(2026, 1, 2, tzinfo=UTC)
    )

    assert [v.version for v in store.list_versions(tmp_path)] == [first, second]
    assert [v.is_current for v in store.list_versions(tmp_path)] == [False, True]

    store.rollback(tmp_path, to=first)

    assert store.current_version(tmp_path) == first
    assert store.read_metadata(tmp_path, first)["n"] == 1


def test_rollback_to_an_unknown_version_fails_and_keeps_current(
    tmp_path: Path, model: TextModel
) -> None:
    version = store.save(model, tmp_path, {})

    with pytest.raises(store.ModelStoreError, match="no version"):
        store.rollback(tmp_path, to="19990101T0000Z-deadbeef")
    assert store.current_version(tmp_path) == version


def test_an_empty_directory_has_no_current_model(tmp_path: Path) -> None:
    assert store.list_versions(tmp_path) == []
    with pytest.raises(store.ModelStoreError, match="train"):
        store.load_current(tmp_path)
