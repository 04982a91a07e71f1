"""Fixtures of the metrics service tests: an auth database with a read key, and a way to
publish events onto the service's topics as the upstream services would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.events import Event
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.kafka_io import committed_to_end, publish_events

# The metrics service's input topics.
INPUT_TOPICS = (
    Topic.DEMAND_CLASSIFIED,
    Topic.CASE_EVENTS,
    Topic.DEMAND_LABELS,
    Topic.SYSTEM_CHANGES,
)


@dataclass(frozen=True)
class AuthFixture:
    settings: AuthSettings
    read_key: str
    change_key: str

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_key}"}

    @property
    def change_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.change_key}"}


@pytest.fixture
async def auth(tmp_path: Path) -> AuthFixture:
    """An auth database of its own with a read key and a key that may also record changes."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    await asyncio.to_thread(upgrade_auth, url)
    store = ApiKeyStore(url)
    try:
        # Organisation-wide (sources:all): a dashboard's and a team lead's keys read every
        # source's data; tests/services/metrics/test_sources.py tests a source's own key.
        read_key, _ = await store.create("analyst", [Scope.READ, Scope.SOURCES_ALL])
        change_key, _ = await store.create(
            "team-lead", [Scope.READ, Scope.LABELS_WRITE, Scope.SOURCES_ALL]
        )
    finally:
        await store.close()
    return AuthFixture(AuthSettings(database_url=url), read_key, change_key)


Publish = Callable[[Sequence[Event]], Awaitable[None]]


@pytest.fixture
def publish(kafka_settings: KafkaSettings) -> Publish:
    """Send events to the topic each belongs on, keyed as upstream keys them, acks=all."""

    async def send(events: Sequence[Event]) -> None:
        await publish_events(kafka_settings, events)

    return send


AllConsumed = Callable[[str], Awaitable[bool]]


@pytest.fixture
def all_consumed(kafka_settings: KafkaSettings) -> AllConsumed:
    """Whether a consumer group has committed up to the end of the service's input topics."""

    async def check(group_id: str) -> bool:
        topics = [topic_name(kafka_settings, topic) for topic in INPUT_TOPICS]
        return await committed_to_end(kafka_settings, group_id, topics)

    return check
