"""Sources are not tenants of one another's data (issue 10, item 12), through the real
broker: a second source's demand with an id `demo` used is accepted, classified and counted
on its own; a repeat within a source is a duplicate; another source's key cannot relabel
demo's demand, and reads only its own source's figures."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.classifier.config import ClassifierSettings
from services.classifier.db.migrate import upgrade as upgrade_classifier
from services.classifier.main import create_app as create_classifier
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
from tests.support.factories import demand_body, label_body
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TEXT = "Where is my engineer? Still waiting since Monday"
MACHINE = [Scope.DEMANDS_WRITE, Scope.LABELS_WRITE, Scope.READ]


async def test_two_sources_one_id_both_counted_and_neither_reaches_the_other(
    kafka_settings: KafkaSettings,
    database_url: str,
    unique_group: str,
    tmp_path: Path,
    seed_model: TrainedModel,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    auth_url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    ledger_url = f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    labels_url = f"sqlite+aiosqlite:///{tmp_path / 'classifier.db'}"
    await asyncio.to_thread(upgrade_auth, auth_url)
    await asyncio.to_thread(upgrade_intake, ledger_url)
    await asyncio.to_thread(upgrade_classifier, labels_url)
    # The session's seed model as the current version: the classifier does not train at start
    # (test_pipeline does, a fresh machine's start).
    await store_version(labels_url, seed_model.model, seed_model.metadata)
    store = ApiKeyStore(auth_url)
    demo, _ = await store.create("demo", MACHINE)
    genesys, _ = await store.create("genesys", MACHINE)
    org, _ = await store.create("bi", [Scope.READ, Scope.SOURCES_ALL])
    await store.close()
    auth = AuthSettings(database_url=auth_url)
    headers = {name: {"Authorization": f"Bearer {key}"} for name, key in
               (("demo", demo), ("genesys", genesys), ("org", org))}  # fmt: skip
    async with AsyncExitStack() as stack:
        intake = await stack.enter_async_context(
            running(
                create_intake(
                    IntakeSettings(kafka=kafka_settings, database_url=ledger_url, auth=auth)
                )
            )
        )
        await stack.enter_async_context(
            running(
                create_classifier(
                    ClassifierSettings(
                        kafka=kafka_settings,
                        group_id=f"{unique_group}-classifier",
                        transactional_id=f"{unique_group}-tx",
                        model_dir=tmp_path / "models",
                        database_url=labels_url,
                        auth=auth,
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
                        auth=auth,
                    )
                )
            )
        )
        await wait_until(lambda: _ready(intake), what="intake ready")

        async def post(source: str) -> httpx.Response:
            body = demand_body(id="shared-1", source=source, customer_ref="C-1", text=TEXT)
            return await intake.post("/v1/demands", json=body, headers=headers[source])

        assert (await post("demo")).status_code == 202
        theirs = await post("genesys")  # before: 200 "duplicate", the demand dropped
        assert (theirs.status_code, theirs.json()["status"]) == (202, "accepted")
        again = await post("genesys")
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")

        async def volume(reader: str) -> tuple[int, int]:
            response = await metrics.get("/v1/demand/overall", headers=headers[reader])
            assert response.status_code == 200, response.text
            row: dict[str, Any] = response.json()
            return row["volume"], row["value"]

        await wait_until(
            lambda: volume("org"),
            accept=lambda counted: counted[0] == 2,
            timeout=90,
            what="both sources' demands classified and counted",
        )
        assert (await volume("demo"))[0] == (await volume("genesys"))[0] == 1

        # genesys's labels:write key cannot relabel demo's demand: refused whether or not
        # demo has it, and its own label moves its own demand only.
        def label(demand_id: str, label_id: str, **fields: Any) -> Any:
            body = label_body(id=label_id, demand_type="value", purpose="billing", **fields)
            return intake.post(
                f"/v1/demands/{demand_id}/labels", json=body, headers=headers["genesys"]
            )

        named = await label("shared-1", "g-1", demand_source="demo")
        unknown = await label("nobody-has-this", "g-2", demand_source="demo")
        assert named.status_code == unknown.status_code == 403
        assert named.json()["detail"] == unknown.json()["detail"]
        assert await volume("genesys") == (1, 0)  # chasing an engineer: failure demand
        demo_before = await volume("demo")
        assert (await label("shared-1", "g-3")).status_code == 202
        await wait_until(
            lambda: volume("genesys"),
            accept=lambda counted: counted == (1, 1),
            timeout=60,
            what="genesys's own demand relabelled as value demand",
        )
        assert await volume("demo") == demo_before


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
