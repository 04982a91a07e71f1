"""Fixtures for intake: migrated databases, API keys, and a running intake on a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.intake.config import IntakeSettings
from services.intake.db.migrate import upgrade as upgrade_intake
from services.intake.main import create_app
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.kafka.settings import KafkaSettings
from tests.support.apps import running
from tests.support.waiting import wait_until


@pytest.fixture
async def auth_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    await asyncio.to_thread(upgrade_auth, url)
    return url


@pytest.fixture
async def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    await asyncio.to_thread(upgrade_intake, url)
    return url


@pytest.fixture
async def key_store(auth_url: str) -> AsyncIterator[ApiKeyStore]:
    store = ApiKeyStore(auth_url, cache_ttl_s=0)
    yield store
    await store.close()


@pytest.fixture
async def demo_key(key_store: ApiKeyStore) -> str:
    plaintext, _ = await key_store.create("demo", [Scope.DEMANDS_WRITE, Scope.LABELS_WRITE])
    return plaintext


@pytest.fixture
def intake_settings(
    kafka_settings: KafkaSettings, auth_url: str, ledger_url: str
) -> IntakeSettings:
    return IntakeSettings(
        kafka=kafka_settings,
        database_url=ledger_url,
        auth=AuthSettings(database_url=auth_url, cache_ttl_s=0),
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
async def intake(
    intake_settings: IntakeSettings, demo_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A running intake whose requests carry the demo key unless told otherwise."""
    async with running(create_app(intake_settings)) as client:
        client.headers["Authorization"] = f"Bearer {demo_key}"
        await wait_until(lambda: _ready(client), what="intake ready")
        yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
