"""The whole pipeline through the real broker: HTTP in, classified and counted out."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.classifier.config import ClassifierSettings
from services.classifier.main import create_app as create_classifier
from services.intake.config import IntakeSettings
from services.intake.main import create_app as create_intake
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.main import create_app as create_metrics
from shared.kafka.settings import KafkaSettings
from tests.support.apps import running
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DEMANDS = [
    ("I'd like to pay my bill by direct debit", "C-1"),
    ("Where is my engineer? Still waiting since Monday", "C-2"),
    ("I am moving house next month", "C-3"),
    ("My bill is wrong again", "C-1"),
    ("I want to book an engineer visit", "C-4"),
]


def demand_body(index: int, text: str, customer: str) -> dict[str, Any]:
    return {
        "id": f"e2e-{index}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "channel": "phone",
        "source": "demo",
        "customer_ref": customer,
        "text": text,
    }


async def test_demands_posted_over_http_are_classified_and_counted(
    kafka_settings: KafkaSettings, database_url: str, unique_group: str
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    async with AsyncExitStack() as stack:
        intake = await stack.enter_async_context(
            running(create_intake(IntakeSettings(kafka=kafka_settings)))
        )
        await stack.enter_async_context(
            running(
                create_classifier(
                    ClassifierSettings(
                        kafka=kafka_settings,
                        group_id=f"{unique_group}-classifier",
                        transactional_id=f"{unique_group}-tx",
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
                    )
                )
            )
        )
        await wait_until(lambda: _ready(intake), what="intake ready")
        for index, (text, customer) in enumerate(DEMANDS):
            response = await intake.post("/v1/demands", json=demand_body(index, text, customer))
            assert response.status_code == 202, response.text
            assert response.json() == {"id": f"e2e-{index}", "status": "accepted"}

        purposes = await wait_until(
            lambda: _purposes(metrics),
            accept=lambda rows: sum(r["volume"] for r in rows) == len(DEMANDS),
            timeout=60,
            what="all demands counted by the metrics service",
        )
        by_purpose = {row["purpose"]: row for row in purposes}
        assert sum(r["failure"] for r in purposes) == 2  # "still waiting", "wrong again"
        assert sum(r["value"] for r in purposes) == 3
        assert by_purpose["billing"]["volume"] == 2
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
