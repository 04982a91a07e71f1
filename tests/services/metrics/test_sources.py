"""Sources are not tenants of one another's data (issue 10, item 12): a demand is (source, id),
a customer and its cases are one source's, a label reaches only its demand's source, and a
source's own key reads only its source's figures, queues and cases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from services.metrics.main import create_app
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, DemandType, Event
from shared.kafka.settings import KafkaSettings
from tests.support.apps import running
from tests.support.factories import case_event, demand_classified, demand_labelled
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Recent: the queues keep the words only for a while after intake received them.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)

# Both sources use the id "same-1", the customer "C1" and the case "K1"; demo's demand is
# value demand, genesys's failure demand (and below the review threshold).
EVENTS: list[Event] = [
    demand_classified(
        id="same-1", source="demo", customer_ref="C1", case_ref="K1", occurred_at=T0,
        purpose="billing", demand_type=DemandType.VALUE, confidence=0.2,
    ),
    demand_classified(
        id="same-1", source="genesys", customer_ref="C1", case_ref="K1",
        occurred_at=T0 + timedelta(hours=1), purpose="billing",
        demand_type=DemandType.FAILURE, failure_kind="repeat", confidence=0.2,
    ),
    case_event(
        id="f1", source="demo", customer_ref="C1", case_ref="K1",
        type=CaseEventType.FULFILLED, occurred_at=T0 + timedelta(days=1),
    ),
]  # fmt: skip


@pytest.fixture
async def keys(tmp_path: Path) -> tuple[AuthSettings, dict[str, dict[str, str]]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    await asyncio.to_thread(upgrade_auth, url)
    store = ApiKeyStore(url)
    try:
        made = {
            "demo": await store.create("demo", [Scope.READ, Scope.LABELS_WRITE]),
            "genesys": await store.create("genesys", [Scope.READ, Scope.LABELS_WRITE]),
            "org": await store.create("bi", [Scope.READ, Scope.LABELS_WRITE, Scope.SOURCES_ALL]),
        }
    finally:
        await store.close()
    headers = {name: {"Authorization": f"Bearer {key}"} for name, (key, _) in made.items()}
    return AuthSettings(database_url=url), headers


@pytest.fixture
async def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    await asyncio.to_thread(upgrade, url)
    return url


async def _apply(url: str, events: list[Event]) -> None:
    engine = create_engine(url)
    try:
        async with session_factory(engine).begin() as session:
            await apply_events(session, events)
    finally:
        await engine.dispose()


@pytest.fixture
async def client(
    database: str, kafka_settings: KafkaSettings, unique_group: str, keys: Any
) -> AsyncIterator[httpx.AsyncClient]:
    await _apply(database, EVENTS)
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=database, group_id=unique_group, auth=keys[0]
    )
    async with running(create_app(settings)) as http:

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_until(ready, what="metrics ready")
        yield http


async def _volume(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, int]:
    overall = (await client.get("/v1/demand/overall", headers=headers)).json()
    return overall["volume"], overall["failure"]


async def test_a_sources_key_reads_only_its_source_and_an_organisation_key_reads_both(
    client: httpx.AsyncClient, keys: Any
) -> None:
    headers = keys[1]
    # Both demands are counted: the second was dropped as a redelivery of the first before.
    assert await _volume(client, headers["org"]) == (2, 1)
    assert await _volume(client, headers["demo"]) == (1, 0)
    assert await _volume(client, headers["genesys"]) == (1, 1)

    purposes = (await client.get("/v1/purposes", headers=headers["demo"])).json()
    assert [(p["purpose"], p["volume"], p["failure"]) for p in purposes] == [("billing", 1, 0)]

    async def queued(name: str) -> list[Any]:
        # Demands drawn for the audit wait in its (blind) queue, the others in review's.
        items = []
        for queue in ("audit", "review"):
            answer = await client.get(f"/v1/{queue}/queue", headers=headers[name])
            items += answer.json()["items"]
        return items

    demo_queue = await queued("demo")
    org_queue = await queued("org")
    assert [(i["source"], i["demand_id"]) for i in demo_queue] == [("demo", "same-1")]
    assert sorted((i["source"], i["demand_id"]) for i in org_queue) == [
        ("demo", "same-1"),
        ("genesys", "same-1"),
    ]

    # The case K1 is demo's (fulfilled by demo's case event) and genesys's (still open):
    # a source's key finds its own, and another source's case is as unknown as no case.
    demo_case = (await client.get("/v1/cases/K1", headers=headers["demo"])).json()
    assert (demo_case["status"], [e["id"] for e in demo_case["entries"]]) == (
        "fulfilled",
        ["same-1", "f1"],
    )
    genesys_case = (await client.get("/v1/cases/K1", headers=headers["genesys"])).json()
    assert genesys_case["status"] == "open"
    assert (await client.get("/v1/cases/K1", headers=headers["org"])).status_code == 409
    demo_only = await client.get("/v1/cases/auto-x", headers=headers["genesys"])
    assert demo_only.status_code == 404


async def test_a_label_reaches_only_its_demands_source(
    database: str, client: httpx.AsyncClient, keys: Any
) -> None:
    headers = keys[1]
    await _apply(
        database,
        [
            demand_labelled(
                demand_id="same-1", demand_source="genesys", demand_type=DemandType.VALUE
            )
        ],
    )
    assert await _volume(client, headers["org"]) == (2, 0)  # genesys's relabelled
    assert await _volume(client, headers["demo"]) == (1, 0)
    # An old label without a source: "same-1" is used by two sources, so it applies to none.
    await _apply(
        database,
        [
            demand_labelled(
                demand_id="same-1",
                demand_source=None,
                demand_type=DemandType.FAILURE,
                failure_kind="repeat",
                labelled_at=datetime.now(UTC) + timedelta(minutes=1),
            )
        ],
    )
    assert await _volume(client, headers["org"]) == (2, 0)


async def test_an_old_label_applies_to_the_one_demand_of_its_id(database: str) -> None:
    await _apply(
        database,
        [
            demand_classified(id="only-1", source="demo", customer_ref="C9", occurred_at=T0),
            demand_labelled(
                demand_id="only-1",
                demand_source=None,
                demand_type=DemandType.FAILURE,
                failure_kind="repeat",
            ),
        ],
    )
    engine = create_engine(database)
    try:
        async with session_factory(engine)() as session:
            from sqlalchemy import select

            from services.metrics.db.tables import DemandFactRow

            row = (await session.scalars(select(DemandFactRow))).one()
    finally:
        await engine.dispose()
    assert (row.source, row.demand_id, row.demand_type, row.labelled) == (
        "demo",
        "only-1",
        "failure",
        True,
    )
