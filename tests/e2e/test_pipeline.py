"""The whole pipeline through the real broker: HTTP in, classified and counted out."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.classifier.config import TAXONOMY, ClassifierSettings
from services.classifier.db.migrate import upgrade as upgrade_classifier
from services.classifier.main import create_app as create_classifier
from services.classifier.taxonomy import load_taxonomy
from services.classifier.training import TrainedModel
from services.intake.config import IntakeSettings
from services.intake.db.migrate import upgrade as upgrade_intake
from services.intake.main import create_app as create_intake
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.main import create_app as create_metrics
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.kafka.settings import KafkaSettings
from tests.services.classifier.conftest import store_version
from tests.support.apps import running
from tests.support.factories import demand_body
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DEMANDS = [
    ("I'd like to pay my bill by direct debit", "C-1"),
    ("Where is my engineer? Still waiting since Monday", "C-2"),
    ("I am moving house next month", "C-3"),
    ("My bill is wrong again", "C-1"),
    ("I want to book an engineer visit", "C-4"),
]


async def test_demands_posted_over_http_are_classified_and_counted(
    kafka_settings: KafkaSettings,
    database_url: str,
    unique_group: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    auth_url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    ledger_url = f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    await asyncio.to_thread(upgrade_auth, auth_url)
    await asyncio.to_thread(upgrade_intake, ledger_url)
    labels_url = f"sqlite+aiosqlite:///{tmp_path / 'classifier.db'}"
    await asyncio.to_thread(upgrade_classifier, labels_url)
    if not database_url.startswith("sqlite"):
        # The parameter is the metrics database's; the classifier's start is the same in
        # both (a SQLite label store, no model): the SQLite run trains at start, a fresh
        # machine end to end, and this one serves the session's seed model, the same recipe
        # stored as the current version (~12 s of CPU less; it is trained once a session).
        seed_model: TrainedModel = request.getfixturevalue("seed_model")
        await store_version(labels_url, seed_model.model, seed_model.metadata)
    store = ApiKeyStore(auth_url)
    api_key, _ = await store.create("demo", [Scope.DEMANDS_WRITE, Scope.READ])
    await store.close()
    intake_settings = IntakeSettings(
        kafka=kafka_settings, database_url=ledger_url, auth=AuthSettings(database_url=auth_url)
    )
    async with AsyncExitStack() as stack:
        intake = await stack.enter_async_context(running(create_intake(intake_settings)))
        intake.headers["Authorization"] = f"Bearer {api_key}"
        await stack.enter_async_context(
            running(
                create_classifier(
                    ClassifierSettings(
                        kafka=kafka_settings,
                        group_id=f"{unique_group}-classifier",
                        transactional_id=f"{unique_group}-tx",
                        model_dir=tmp_path / "models",  # none: trained at start, or stored
                        database_url=labels_url,
                        auth=AuthSettings(database_url=auth_url),
                    )
                )
            )
        )
        metrics = await stack.enter_async_context(
            running(
                create_metrics(
                    MetricsSettings(
                        kafka=kafka_settings,
                        database_url=database_url,
                        group_id=f"{unique_group}-metrics",
                        auth=AuthSettings(database_url=auth_url),
                    )
                )
            )
        )
        metrics.headers["Authorization"] = f"Bearer {api_key}"
        await wait_until(lambda: _ready(intake), what="intake ready")
        for index, (text, customer) in enumerate(DEMANDS):
            response = await intake.post(
                "/v1/demands", json=demand_body(id=f"e2e-{index}", customer_ref=customer, text=text)
            )
            assert response.status_code == 202, response.text
            assert response.json() == {"id": f"e2e-{index}", "status": "accepted"}

        purposes = await wait_until(
            lambda: _purposes(metrics),
            accept=lambda rows: sum(r["volume"] for r in rows) == len(DEMANDS),
            timeout=60,
            what="all demands counted by the metrics service",
        )
        # The model's exact labels may change as it learns; what holds: every purpose is one
        # of the taxonomy's, and every demand is value, failure or unknown.
        taxonomy = set(load_taxonomy(TAXONOMY).purpose_slugs)
        assert {row["purpose"] for row in purposes} <= taxonomy
        assert sum(r["value"] + r["failure"] + r["unknown"] for r in purposes) == len(DEMANDS)
        assert sum(r["failure"] for r in purposes) >= 1  # "still waiting", "wrong again"
        for row in purposes:
            assert row["volume"] == row["value"] + row["failure"] + row["unknown"]
        assert (await metrics.get("/readyz")).status_code == 200


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _purposes(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/purposes")
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()
    return rows
