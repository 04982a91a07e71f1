"""Intake never says yes while the broker cannot acknowledge, and recovers on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from devstack.kafka import LocalKafkaConfig, start, stop
from services.intake.config import IntakeSettings
from services.intake.db.migrate import upgrade as upgrade_intake
from services.intake.main import create_app as create_intake
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.kafka.admin import ensure_topics
from shared.kafka.settings import KafkaSettings
from shared.topics import topic_specs
from tests.support.apps import running
from tests.support.factories import demand_body
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def test_intake_answers_503_while_the_broker_is_down_and_recovers_without_restart(
    private_kafka: LocalKafkaConfig, tmp_path: Path
) -> None:
    auth_url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    ledger_url = f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    await asyncio.to_thread(upgrade_auth, auth_url)
    await asyncio.to_thread(upgrade_intake, ledger_url)
    store = ApiKeyStore(auth_url)
    api_key, _ = await store.create("demo", [Scope.DEMANDS_WRITE])
    await store.close()
    kafka = KafkaSettings(
        bootstrap_servers=f"{private_kafka.host}:{private_kafka.port}",
        delivery_timeout_s=3.0,
        request_timeout_ms=3000,
        partitions=1,
    )
    await ensure_topics(kafka, topic_specs(kafka))
    settings = IntakeSettings(
        kafka=kafka,
        retry_after_s=7,
        database_url=ledger_url,
        auth=AuthSettings(database_url=auth_url),
    )
    async with running(create_intake(settings)) as intake:
        intake.headers["Authorization"] = f"Bearer {api_key}"
        await wait_until(lambda: _status(intake, "/readyz"), accept=lambda s: s == 200)
        assert (await intake.post("/v1/demands", json=demand_body(id="before"))).status_code == 202

        stop(private_kafka)
        refused = await intake.post("/v1/demands", json=demand_body(id="during"))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "7"
        assert refused.json()["title"] == "Broker unavailable"
        readiness = await intake.get("/readyz")
        assert readiness.status_code == 503
        assert readiness.json()["checks"]["kafka"] == "unavailable"
        assert (await intake.get("/healthz")).status_code == 200  # it recovers by itself

        start(private_kafka)
        accepted = await wait_until(
            lambda: _post_status(intake, "after"),
            accept=lambda s: s == 202,
            timeout=90,
            interval=1.0,
            what="intake accepting again after the broker came back",
        )
        assert accepted == 202
        assert (await intake.get("/readyz")).status_code == 200


async def _status(client: Any, path: str) -> int:
    return int((await client.get(path)).status_code)


async def _post_status(client: Any, demand_id: str) -> int:
    return int((await client.post("/v1/demands", json=demand_body(id=demand_id))).status_code)
