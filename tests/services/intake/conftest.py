"""Fixtures for intake: migrated databases, API keys, and a running intake on a real broker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from devstack.process import pick_free_port
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


@pytest.fixture
def intake_url(intake_settings: IntakeSettings) -> Iterator[str]:
    """A real uvicorn server running intake in a thread: for what only a socket shows
    (schema fuzzing over HTTP, a client hanging up). Its logs reach caplog."""
    port = pick_free_port("127.0.0.1")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(intake_settings),
            host="127.0.0.1",
            port=port,
            log_config=None,  # as in production: records reach the root logger (and caplog)
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            pytest.fail("intake's server did not start within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
