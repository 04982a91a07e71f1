"""A tiny labelled set, enough for the model to learn something checkable in well under a second;
a seed model, migrated databases, API keys and settings for running the service."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.classifier.config import ClassifierSettings
from services.classifier.model.examples import Example
from services.classifier.model.text_model import TextModel
from services.classifier.training import TrainedModel
from shared.auth.keys import Scope
from shared.auth.settings import AuthSettings
from shared.kafka.settings import KafkaSettings

_VALUE = {
    "billing / pay my bill": [
        "I want to pay my bill by card",
        "can I set up a direct debit",
        "how do I pay my balance",
        "please change my payment date",
        "I would like to pay what I owe",
    ],
    "moving home": [
        "I am moving house next month",
        "can I take my account to my new address",
        "I have just moved in and want an account",
        "we are moving home soon",
        "setting up supply at my new address",
    ],
    "faults / broadband not working": [
        "my internet is down",
        "the router shows a red light",
        "my wifi keeps dropping",
        "no connection on my broadband today",
        "broadband router not connecting",
    ],
}
_FAILURE = {
    "billing / pay my bill": [
        ("I paid my bill weeks ago and it still shows as owing", "progress_chasing"),
        ("you took my direct debit twice, that is wrong", "not_done_right"),
        ("still waiting for my payment to go through", "progress_chasing"),
        ("third time I have called about paying my bill", "repeat"),
        ("you said you would cancel the direct debit and never did", "not_done"),
    ],
    "moving home": [
        ("I told you I moved and you still bill the old address", "not_done_right"),
        ("still waiting for my final bill after moving home", "progress_chasing"),
        ("nobody has replied about my move, where is it", "progress_chasing"),
        ("calling again about my home move", "repeat"),
        ("you promised to move my account and never did", "not_done"),
    ],
    "faults / broadband not working": [
        ("the engineer came and the internet is still not working", "not_done_right"),
        ("where is the engineer you promised for my broadband", "progress_chasing"),
        ("third time calling about my wifi dropping", "repeat"),
        ("still no internet after two weeks of waiting", "progress_chasing"),
        ("engineer never turned up to fix the router", "not_done"),
    ],
}


# A few general value/failure rows of other sectors (the shipped corpus has thousands).
_GENERAL = [
    ("banking", "I'd like to open a savings account", "value", ""),
    ("banking", "can I order a new debit card", "value", ""),
    ("banking", "how do I set up a standing order", "value", ""),
    (
        "banking",
        "my new card still hasn't arrived after three weeks",
        "failure",
        "progress_chasing",
    ),
    ("banking", "you charged me twice for the same payment", "failure", "not_done_right"),
    ("banking", "third time calling about the same blocked card", "failure", "repeat"),
    ("retail", "I want to order the blue sofa", "value", ""),
    ("retail", "do you deliver on saturdays", "value", ""),
    ("retail", "can I return a jumper I bought online", "value", ""),
    ("retail", "where is my parcel, it was due last week", "failure", "progress_chasing"),
    ("retail", "the courier never turned up", "failure", "not_done"),
    ("retail", "you sent me the wrong size", "failure", "not_done_right"),
    ("council", "I want to book a bulky waste collection", "value", ""),
    ("council", "how do I apply for a parking permit", "value", ""),
    ("council", "can I register for council tax", "value", ""),
    ("council", "my bin was missed again this week", "failure", "repeat"),
    ("council", "nobody has called me back about my housing application", "failure", "not_done"),
    ("council", "I don't understand this council tax letter", "failure", "not_understood"),
    ("health", "I'd like to book a blood test", "value", ""),
    ("health", "can I change my appointment to friday", "value", ""),
    ("health", "still waiting for my test results after a month", "failure", "progress_chasing"),
    ("health", "the clinic cancelled my appointment without telling me", "failure", "not_done"),
]


@pytest.fixture
def general_corpus_csv(tmp_path: Path) -> Path:
    path = tmp_path / "general.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "sector", "demand_type", "failure_kind", "channel", "purpose"])
        for sector, text, demand_type, kind in _GENERAL:
            writer.writerow([text, sector, demand_type, kind, "phone", f"{sector} things"])
    return path


def small_examples() -> list[Example]:
    rows = [Example(t, p, "value") for p, texts in _VALUE.items() for t in texts]
    rows += [Example(t, p, "failure", k) for p, pairs in _FAILURE.items() for t, k in pairs]
    return rows


@pytest.fixture
def examples() -> list[Example]:
    return small_examples()


@pytest.fixture
def examples_csv(tmp_path: Path) -> Path:
    path = tmp_path / "examples.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "purpose", "demand_type", "failure_kind", "channel"])
        for e in small_examples():
            writer.writerow([e.text, e.purpose, e.demand_type, e.failure_kind or "", "phone"])
    return path


async def store_version(
    database_url: str,
    model: TextModel,
    metadata: dict[str, Any] | None = None,
    *,
    version: str | None = None,
    make_current: bool = True,
    by: str = "test",
) -> str:
    """Store ``model`` in the classifier database as a version (current by default), as a
    trainer elsewhere in the fleet would; return its name."""
    from services.classifier.db.model_versions import ModelVersions, NewVersion
    from services.classifier.model import store
    from services.classifier.model.text_model import FORMAT
    from shared.database.engine import create_engine

    payload = store.dumps(model)
    name = version or f"{store.version_name(payload)}-{uuid.uuid4().hex[:4]}"
    engine = create_engine(database_url)
    try:
        await ModelVersions(engine).add(
            NewVersion(
                version=name,
                created_by=by,
                reason=str((metadata or {}).get("reason", "test")),
                content_hash=store.content_hash(payload),
                model_format=FORMAT,
                metadata=metadata or {},
                payload=payload,
            ),
            make_current=make_current,
        )
    finally:
        await engine.dispose()
    return name


@pytest.fixture
def labels_url(tmp_path: Path) -> str:
    """A migrated classifier database (SQLite) of this test's own, with no model yet."""
    from services.classifier.db.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'classifier.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def seeded_url(labels_url: str, seed_model: TrainedModel) -> str:
    """``labels_url`` whose current model version is the seed model (no training at start)."""
    await store_version(labels_url, seed_model.model, seed_model.metadata)
    return labels_url


@pytest.fixture
def auth_settings(tmp_path: Path) -> AuthSettings:
    """A migrated API-key database of this test's own (no cache: a revocation counts at once)."""
    from shared.auth.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    upgrade(url)
    return AuthSettings(database_url=url, cache_ttl_s=0)


@dataclass(frozen=True)
class ApiKeys:
    reader: str  # read
    operator: str  # read, model:write
    sender: str  # demands:write, labels:write: a sending system's key

    @staticmethod
    def header(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def api_keys(auth_settings: AuthSettings) -> ApiKeys:
    from shared.auth.store import ApiKeyStore

    store = ApiKeyStore(auth_settings.database_url)
    try:
        reader, _ = await store.create("dashboard", [Scope.READ])
        operator, _ = await store.create("ops", [Scope.READ, Scope.MODEL_WRITE])
        sender, _ = await store.create("demo", [Scope.DEMANDS_WRITE, Scope.LABELS_WRITE])
    finally:
        await store.close()
    return ApiKeys(reader=reader, operator=operator, sender=sender)


@pytest.fixture
def classifier_settings(
    kafka_settings: KafkaSettings,
    unique_group: str,
    seeded_url: str,
    auth_settings: AuthSettings,
    tmp_path: Path,
) -> Callable[..., ClassifierSettings]:
    """``classifier_settings(**overrides)``: a classifier of this test's own on the test broker
    (its group, transactional id and databases, the seed model current); no model watch, no
    schedule."""

    def make(**overrides: Any) -> ClassifierSettings:
        fields: dict[str, Any] = {
            "kafka": kafka_settings,
            "group_id": unique_group,
            "transactional_id": f"{unique_group}-tx",
            "model_dir": tmp_path / "no-model-dir",
            "database_url": seeded_url,
            "auth": auth_settings,
            "model_watch_interval_s": 0,
            "retrain_interval_s": 0,
        }
        return ClassifierSettings(**(fields | overrides))

    return make
