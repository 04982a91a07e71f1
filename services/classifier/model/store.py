"""A directory of model versions with a CURRENT pointer, so a bad model can be rolled back.

Layout::

    DIR/CURRENT                              the active version's name
    DIR/versions/<version>/model.joblib      the pickled TextModel
    DIR/versions/<version>/metadata.json     plain JSON: readable without unpickling anything

Only load models from directories you trust: joblib files are pickles.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
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


@dataclass(frozen=True, slots=True)
class StoredVersion:
    version: str
    metadata: dict[str, Any]
    is_current: bool


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # readers see the old file or the new one, never half of one


def save(
    model: TextModel,
    model_dir: Path | str,
    metadata: dict[str, Any],
    *,
    now: datetime | None = None,
    make_current: bool = True,
) -> str:
    """Store ``model`` as a new version and (by default) point CURRENT at it; return the version."""
    root = Path(model_dir)
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    payload = buffer.getvalue()
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%MZ")
    version = f"{stamp}-{hashlib.sha256(payload).hexdigest()[:8]}"
    directory = root / "versions" / version
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / MODEL_FILE, payload)
    described = {"version": version, "created_at": datetime.now(UTC).isoformat(), **metadata}
    _write_atomically(directory / METADATA_FILE, json.dumps(described, indent=2).encode())
    if make_current:
        _point_current(root, version)
    return version


def _point_current(root: Path, version: str) -> None:
    _write_atomically(root / CURRENT_FILE, f"{version}\n".encode())


def current_version(model_dir: Path | str) -> str | None:
    pointer = Path(model_dir) / CURRENT_FILE
    if not pointer.exists():
        return None
    return pointer.read_text().strip() or None


def read_metadata(model_dir: Path | str, version: str) -> dict[str, Any]:
    path = Path(model_dir) / "versions" / version / METADATA_FILE
    if not path.exists():
        raise ModelStoreError(f"no version {version!r} in {model_dir}")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def list_versions(model_dir: Path | str) -> list[StoredVersion]:
    """Every stored version, oldest first (version names sort by time)."""
    versions_dir = Path(model_dir) / "versions"
    if not versions_dir.exists():
        return []
    current = current_version(model_dir)
    names = sorted(p.name for p in versions_dir.iterdir() if (p / MODEL_FILE).exists())
    return [StoredVersion(n, read_metadata(model_dir, n), n == current) for n in names]


def load(model_dir: Path | str, version: str) -> TextModel:
    path = Path(model_dir) / "versions" / version / MODEL_FILE
    if not path.exists():
        raise ModelStoreError(f"no version {version!r} in {model_dir}")
    model = joblib.load(path)
    if not isinstance(model, TextModel):
        raise ModelStoreError(f"{path} does not hold a TextModel")
    if getattr(model, "format", 1) != FORMAT:
        raise OutdatedModel(
            f"{path} was trained by an older classifier (model format "
            f"{getattr(model, 'format', 1)}, this one reads {FORMAT}): train a new version"
        )
    return model


def load_current(model_dir: Path | str) -> tuple[str, TextModel]:
    version = current_version(model_dir)
    if version is None:
        raise ModelStoreError(f"no trained model in {model_dir}: run 'classifier train' first")
    return version, load(model_dir, version)


def rollback(model_dir: Path | str, to: str) -> str:
    """Point CURRENT at an earlier (or any stored) version."""
    if not (Path(model_dir) / "versions" / to / MODEL_FILE).exists():
        known = ", ".join(v.version for v in list_versions(model_dir)) or "none"
        raise ModelStoreError(f"no version {to!r} in {model_dir} (stored: {known})")
    _point_current(Path(model_dir), to)
    return to
