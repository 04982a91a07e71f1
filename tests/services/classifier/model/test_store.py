"""A model version as bytes (what the classifier database stores), and the model directories
of earlier releases (read once, to import them)."""

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


def test_a_model_survives_its_bytes_and_its_version_names_the_time_and_hash(
    model: TextModel,
) -> None:
    payload = store.dumps(model)
    version = store.version_name(payload, datetime(2026, 11, 21, 15, 30, tzinfo=UTC))

    loaded = store.loads(payload, where="test", expected_hash=store.content_hash(payload))

    assert version == f"20261121T1530Z-{store.content_hash(payload)[:8]}"
    assert loaded.predict("pay my bill").purpose == model.predict("pay my bill").purpose


def test_bytes_that_are_no_text_model_are_refused(model: TextModel) -> None:
    import io

    import joblib

    buffer = io.BytesIO()
    joblib.dump({"not": "a model"}, buffer)

    with pytest.raises(store.ModelStoreError, match="does not hold a TextModel"):
        store.loads(buffer.getvalue(), where="v1")


def test_a_model_of_another_format_is_outdated(model: TextModel) -> None:
    model.format = -1

    with pytest.raises(store.OutdatedModel, match="older classifier"):
        store.loads(store.dumps(model), where="v1")


def test_a_directory_of_an_earlier_release_is_read_with_its_current(
    tmp_path: Path, model: TextModel
) -> None:
    payload = store.dumps(model)
    store.write_directory_version(tmp_path, "20260101T0000Z-aaaaaaaa", payload, {"n": 1})
    store.write_directory_version(tmp_path, "20260102T0000Z-bbbbbbbb", payload, {"n": 2})
    (tmp_path / "CURRENT").write_text("20260101T0000Z-aaaaaaaa\n")

    found = store.read_directory(tmp_path)

    assert [(v.version, v.metadata) for v in found.versions] == [
        ("20260101T0000Z-aaaaaaaa", {"n": 1}),
        ("20260102T0000Z-bbbbbbbb", {"n": 2}),
    ]
    assert found.current == "20260101T0000Z-aaaaaaaa"
    assert found.versions[0].payload == payload
    metadata = json.loads(
        (tmp_path / "versions" / "20260102T0000Z-bbbbbbbb" / "metadata.json").read_text()
    )
    assert metadata == {"n": 2}


def test_a_missing_directory_or_a_current_without_its_version_has_nothing(
    tmp_path: Path,
) -> None:
    assert store.read_directory(tmp_path / "missing") == store.ModelDirectory([], None)
    (tmp_path / "CURRENT").write_text("gone\n")
    assert store.read_directory(tmp_path) == store.ModelDirectory([], None)
