"""The classifier as an app on the service skeleton: nothing opened before the lifespan, every
route behind a scoped key, one retraining at a time, and a consumer loop that dies of an
unexpected error is logged, makes the service unready, and comes back."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.classifier import live_model, training
from services.classifier.config import ClassifierSettings
from services.classifier.db.migrate import upgrade
from services.classifier.handler import ClassifyDemands
from services.classifier.main import create_app
from services.classifier.training import TrainedModel
from shared.auth.keys import Scope
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.kafka.settings import KafkaSettings
from shared.service.collector import YOUNG_COLLECTION_AFTER
from shared.topics import Topic, topic_name
from tests.services.classifier.conftest import ApiKeys, store_version
from tests.support.apps import running
from tests.support.factories import demand_received, purpose_metrics
from tests.support.kafka_io import publish_events, read_records
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


async def readiness(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


def test_create_app_opens_no_file_directory_or_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the defaults (.run/models, .run/*.db) are relative
    for name in list(os.environ):
        if name.startswith(("DEMANDSCOPE_CLASSIFIER_", "DEMANDSCOPE_AUTH_")):
            monkeypatch.delenv(name)

    create_app().openapi()
    create_app(
        ClassifierSettings(
            model_dir=tmp_path / "models",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'classifier.db'}",
            auth=AuthSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"),
        )
    ).openapi()

    assert list(tmp_path.iterdir()) == []


def test_importing_and_creating_the_app_in_a_fresh_process_opens_nothing(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DEMANDSCOPE_CLASSIFIER_", "DEMANDSCOPE_AUTH_"))
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import services.classifier.main as m; m.create_app()",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
        timeout=120,
    )

    assert list(tmp_path.iterdir()) == []


def test_serving_does_not_import_evaluation() -> None:
    """`classifier serve` imports the command group and the app; the held-out evaluation
    (and its audit estimates) belong to training and `evaluate`, not to a restart."""
    probe = (
        "import sys; sys.argv = ['demandscope', 'classifier', 'serve']\n"
        "import services.classifier.cli, services.classifier.main\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    imported = set(
        subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.split()
    )

    assert "services.classifier.model.text_model" in imported  # the model it serves
    assert "services.classifier.training" in imported  # a fresh database trains at start
    assert "services.classifier.model.evaluate" not in imported
    assert "shared.estimates" not in imported


async def test_every_route_but_the_probes_needs_a_key(
    classifier_settings: Callable[..., ClassifierSettings],
) -> None:
    app = create_app(classifier_settings())
    operations = [
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
        if path not in OPEN_PATHS
    ]
    assert ("GET", "/v1/model") in operations
    assert ("POST", "/v1/retrain") in operations
    threshold = gc.get_threshold()
    try:
        async with running(app) as client:
            # The serving process collects young objects less often (shared.service.collector).
            assert gc.get_threshold()[0] == YOUNG_COLLECTION_AFTER
            for method, path in operations:
                response = await client.request(method, path)
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["www-authenticate"].startswith("Bearer")
            for path in sorted(OPEN_PATHS):
                assert (await client.get(path)).status_code not in (401, 403), path
    finally:
        gc.set_threshold(*threshold)  # the rest of this test process as it was


async def test_reading_the_model_needs_read_and_retraining_needs_model_write(
    classifier_settings: Callable[..., ClassifierSettings],
    kafka_settings: KafkaSettings,
    api_keys: ApiKeys,
    examples_csv: Path,
    general_corpus_csv: Path,
) -> None:
    header = api_keys.header
    # The metrics service's audited estimate, which the service reads before it trains.
    estimate = {
        "failure_share_estimate": 0.2,
        "failure_share_audited": 60,
        "failure_share_status": "validated",
    }
    await publish_events(
        kafka_settings,
        [purpose_metrics(volume=100, failure_count=20, value_count=80, **estimate)],
    )
    # A small general corpus: the shipped one (2,000+ rows) is most of a retraining's ~10 s
    # of CPU, and what this checks (the scopes, the estimate's prior) does not need it.
    app = create_app(
        classifier_settings(seed_examples=examples_csv, general_corpus=general_corpus_csv)
    )
    async with running(app) as client:
        live = await client.get("/v1/model", headers=header(api_keys.reader))
        assert live.status_code == 200, live.text
        # A sending system's key cannot read, nor can a reader retrain.
        assert (await client.get("/v1/model", headers=header(api_keys.sender))).status_code == 403
        refused = await client.post("/v1/retrain", headers=header(api_keys.reader))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "model:write" in refused.json()["detail"]
        again = await client.get("/v1/model", headers=header(api_keys.reader))
        assert again.json() == live.json()

        retrained = await client.post("/v1/retrain", headers=header(api_keys.operator))
        assert retrained.status_code == 200, retrained.text
        new_version = retrained.json()["model_version"]
        assert new_version != live.json()["model_version"]
        now = await client.get("/v1/model", headers=header(api_keys.operator))
        assert now.json()["model_version"] == new_version
        assert now.json()["fleet_version"] == new_version
        model = app.state.components.model.current.model
        assert (model.failure_prior_source, model.failure_prior) == ("estimate", 0.2)


async def test_a_retrain_anywhere_in_the_fleet_answers_409_elsewhere_and_reaches_all(
    classifier_settings: Callable[..., ClassifierSettings],
    api_keys: ApiKeys,
    examples_csv: Path,
    general_corpus_csv: Path,
    unique_group: str,
    database_url: str,
    seed_model: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two instances on one database (SQLite, PostgreSQL): while one retrains, a retrain on
    either answers 409; its version is then served by both."""
    await asyncio.to_thread(upgrade, database_url)
    await store_version(database_url, seed_model.model, seed_model.metadata)
    release = threading.Event()
    train = training.train_model

    def held_training(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return train(*args, **kwargs)

    monkeypatch.setattr(live_model, "train_model", held_training)
    operator = api_keys.header(api_keys.operator)
    # A small general corpus: the retraining's content is not what is checked (see above).
    small = {"seed_examples": examples_csv, "general_corpus": general_corpus_csv}
    a = create_app(classifier_settings(**small, database_url=database_url))
    b = create_app(
        classifier_settings(
            **small,
            database_url=database_url,
            group_id=f"{unique_group}-b",
            transactional_id=f"{unique_group}-b-tx",
            model_watch_interval_s=0.1,
        )
    )
    async with running(a) as client_a, running(b) as client_b:
        keeper = a.state.components.model
        before = (await client_b.get("/v1/model", headers=operator)).json()

        async def retraining() -> bool:
            return bool(keeper.retraining)

        first = asyncio.create_task(client_a.post("/v1/retrain", headers=operator))
        try:
            await wait_until(retraining, what="the first retraining running")
            elsewhere = await client_b.post("/v1/retrain", headers=operator)
            here = await client_a.post("/v1/retrain", headers=operator)
        finally:
            release.set()
        for second in (elsewhere, here):
            assert second.status_code == 409, second.text
            assert second.headers["retry-after"] == "10"
            assert second.headers["content-type"] == "application/problem+json"
        trained = await first
        assert trained.status_code == 200, trained.text
        assert not keeper.retraining
        version = trained.json()["model_version"]
        assert version != before["model_version"]

        async def served_by_b() -> dict[str, Any]:
            answer: dict[str, Any] = (await client_b.get("/v1/model", headers=operator)).json()
            return answer

        answer = await wait_until(
            served_by_b, accept=lambda m: m["model_version"] == version, what="b serving it"
        )
        assert answer["fleet_version"] == version
        assert answer["instance"] != trained.json()["instance"]
        metrics = (await client_b.get("/metrics")).text
        assert f'demandscope_classifier_model_info{{version="{version}"}} 1.0' in metrics
        assert "demandscope_classifier_model_behind 0.0" in metrics


def test_keys_create_grants_the_model_write_scope(
    auth_settings: AuthSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli.main import app as demandscope

    monkeypatch.setenv("DEMANDSCOPE_AUTH_DATABASE_URL", auth_settings.database_url)
    result = CliRunner().invoke(
        demandscope,
        ["keys", "create", "--source", "ops", "--scope", "read", "--scope", "model:write"],
    )
    assert result.exit_code == 0, result.output
    plaintext = result.output.splitlines()[0]

    async def scopes() -> frozenset[Scope]:
        store = ApiKeyStore(auth_settings.database_url, cache_ttl_s=0)
        try:
            record = await store.authenticate(plaintext)
        finally:
            await store.close()
        assert record is not None
        return record.scopes

    assert asyncio.run(scopes()) == {Scope.READ, Scope.MODEL_WRITE}


async def test_a_consumer_killed_by_an_unexpected_error_is_logged_unready_and_restarted(
    kafka_settings: KafkaSettings,
    classifier_settings: Callable[..., ClassifierSettings],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An error in after_commit is no Kafka error and no record's fault: it ends the loop.
    failed: list[str] = []
    count = ClassifyDemands._count

    def fail_once(self: ClassifyDemands, *args: Any) -> None:
        if not failed:
            failed.append("after_commit")
            raise RuntimeError("a bug in after_commit")
        count(self, *args)

    monkeypatch.setattr(ClassifyDemands, "_count", fail_once)
    caplog.set_level(logging.ERROR, logger="shared.service.supervisor")
    classified = topic_name(kafka_settings, Topic.DEMAND_CLASSIFIED)
    async with running(create_app(classifier_settings())) as client:
        await wait_until(
            lambda: readiness(client), accept=lambda s: s == 200, timeout=60, what="ready"
        )
        await publish_events(kafka_settings, [demand_received(text="pay my bill please")])

        await wait_until(
            lambda: readiness(client),
            accept=lambda s: s == 503,
            timeout=30,
            interval=0.02,
            what="not ready once the consumer loop died",
        )
        died = [r for r in caplog.records if "background task consumer" in r.getMessage()]
        assert died, "the death of the consumer loop was not logged"
        assert died[0].exc_info is not None
        assert isinstance(died[0].exc_info[1], RuntimeError)

        await wait_until(
            lambda: readiness(client),
            accept=lambda s: s == 200,
            timeout=60,
            what="ready again once the supervisor restarted the consumer",
        )
        ready = (await client.get("/readyz")).json()
        assert ready["tasks"]["consumer"] == "running"
        assert ready["checks"] == {
            "kafka": "ok",
            "database": "ok",
            "auth_database": "ok",
            "background": "ok",
        }
        exported = (await client.get("/metrics")).text
        assert 'demandscope_background_task_failures_total{task="consumer"} 1.0' in exported

        # The restarted loop classifies again; the first demand was committed before the error.
        await publish_events(kafka_settings, [demand_received(text="I am moving house")])
        records = await read_records(kafka_settings, classified, count=2)
    assert len(records) == 2
    assert failed == ["after_commit"]
