"""A model version as bytes, and the model directories of earlier releases.

Model versions live in the classifier database (``db/model_versions.py``), shared by every
instance. This module turns a ``TextModel`` into the bytes stored there and back, and reads
the per-pod directory earlier releases kept (imported into the database once; `demandscope
classifier export` writes a version in the same layout, without CURRENT)::

    DIR/CURRENT                              the active version's name
    DIR/versions/<version>/model.joblib      the pickled TextModel
    DIR/versions/<version>/metadata.json     plain JSON: readable without unpickling anything

Trust: a stored model is a pickle (joblib), and unpickling runs code. Whoever can write the
classifier database (or an imported directory) can run code in every classifier instance, so
guard its credentials like the service's own. The content hash stored with each version
catches a damaged row, not an attacker who can write one.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from services.classifier.model.text_model import FORMAT, TextModel

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"


class ModelStoreError(RuntimeError):
    pass


class OutdatedModel(ModelStoreError):
    """The stored model was made by a classifier whose features differ from this one's."""


def dumps(model: TextModel) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    return buffer.getvalue()


def content_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def version_name(payload: bytes, now: datetime | None = None) -> str:
    """Names sort by time, and the hash tells two versions of one minute apart."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%MZ")
    return f"{stamp}-{content_hash(payload)[:8]}"


def loads(payload: bytes, *, where: str, expected_hash: str | None = None) -> TextModel:
    """The ``TextModel`` in ``payload`` (see the trust statement above); ``where`` names it in
    errors."""
    if expected_hash is not None and content_hash(payload) != expected_hash:
        raise ModelStoreError(f"{where} is damaged: its bytes do not match its content hash")
    model = joblib.load(io.BytesIO(payload))
    if not isinstance(model, TextModel):
        raise ModelStoreError(f"{where} does not hold a TextModel")
    if getattr(model, "format", 1) != FORMAT:
        raise OutdatedModel(
            f"{where} was trained by an older classifier (model format "
            f"{getattr(model, 'format', 1)}, this one reads {FORMAT}): train a new version"
        )
    return model


@dataclass(frozen=True, slots=True)
class DirectoryVersion:
    version: str
    metadata: dict[str, Any]
    payload: bytes


@dataclass(frozen=True, slots=True)
class ModelDirectory:
    """What a model directory of an earlier release holds, oldest version first."""

    versions: list[DirectoryVersion]
    current: str | None


def read_directory(model_dir: Path | str) -> ModelDirectory:
    """Every version in ``model_dir`` (none if it does not exist) and its CURRENT."""
    root = Path(model_dir)
    pointer = root / CURRENT_FILE
    current = (pointer.read_text().strip() or None) if pointer.exists() else None
    versions_dir = root / "versions"
    found: list[DirectoryVersion] = []
    if versions_dir.is_dir():
        for directory in sorted(versions_dir.iterdir()):
            model_file = directory / MODEL_FILE
            if not model_file.is_file():
                continue
            metadata_file = directory / METADATA_FILE
            metadata: dict[str, Any] = (
                json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
            )
            found.append(DirectoryVersion(directory.name, metadata, model_file.read_bytes()))
    names = {v.version for v in found}
    return ModelDirectory(found, current if current in names else None)


def write_directory_version(
    model_dir: Path | str, version: str, payload: bytes, metadata: dict[str, Any]
) -> Path:
    """Write one version in the directory layout (an export; it is never read as current)."""
    directory = Path(model_dir) / "versions" / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(payload)
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    return directory
