"""Personal data in a change to the system (issue 10, item 11): the note is masked, a
purpose or an author that is personal data is refused without being echoed, and none is
stored; an account's username cannot be personal data either."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.metrics import service
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.main import create_app
from services.metrics.schemas import ChangeIn
from shared.auth.accounts import check_username
from shared.database.engine import create_engine
from shared.events import SystemChanged
from shared.kafka.codec import decode
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.service.problems import FieldProblem, ProblemError
from shared.topics import Topic, topic_name
from tests.support.apps import ready, running

pytestmark = pytest.mark.integration

PLANTED = ["4111 1111 1111 1111", "4111111111111111", "jo@example.com", "07700 900123"]
NOW = datetime(2026, 3, 2, tzinfo=UTC)
NOTE = "Card 4111 1111 1111 1111 refunded; jo@example.com asked us to ring 07700 900123."


@pytest.fixture
async def metrics_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    await asyncio.to_thread(upgrade, url)
    return url


@pytest.fixture
async def client(
    metrics_url: str, kafka_settings: KafkaSettings, unique_group: str, auth: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=metrics_url, group_id=unique_group, auth=auth.settings
    )
    async with running(create_app(settings)) as http:
        await ready(http)
        http.headers.update(auth.change_headers)
        yield http


async def stored_changes(url: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM purpose_changes"))).all()
    finally:
        await engine.dispose()
    return repr(rows)


def planted_in(text: str) -> list[str]:
    return [value for value in PLANTED if value in text]


async def test_a_change_note_is_stored_and_answered_masked(
    client: httpx.AsyncClient, metrics_url: str, kafka_settings: KafkaSettings
) -> None:
    body = {"changed_at": "2026-03-01T00:00:00Z", "note": NOTE}
    created = await client.post("/v1/purposes/repair/changes", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["note"] == "Card [card] refunded; [email] asked us to ring [phone]."
    listed = await client.get("/v1/purposes/repair/changes")
    assert [change["note"] for change in listed.json()] == [created.json()["note"]]
    assert planted_in(await stored_changes(metrics_url)) == []
    # The event it travelled as holds the masked note only.
    topic = topic_name(kafka_settings, Topic.SYSTEM_CHANGES)
    (record,) = await read_all(kafka_settings, [topic])
    assert planted_in(record.value.decode()) == []
    assert decode(SystemChanged, record.value).note == created.json()["note"]


async def test_a_purpose_that_is_personal_data_is_refused_unechoed_and_unstored(
    client: httpx.AsyncClient, metrics_url: str
) -> None:
    body = {"changed_at": "2026-03-01T00:00:00Z", "note": "new booking process"}
    response = await client.post("/v1/purposes/jo@example.com/changes", json=body)
    assert response.status_code == 422, response.text
    assert planted_in(response.text) == []
    assert response.json()["errors"] == [
        {
            "field": "path.purpose",
            "reason": "looks like an e-mail address; send an opaque reference, not personal data",
        }
    ]
    assert await stored_changes(metrics_url) == "[]"


async def test_a_note_too_long_once_masked_is_a_422_naming_it(client: httpx.AsyncClient) -> None:
    # "AB123456C " is 10 characters, "[ni_number] " 12: a 2,000-character note becomes 2,400.
    body = {"changed_at": "2026-03-01T00:00:00Z", "note": "AB123456C " * 200}
    response = await client.post("/v1/purposes/repair/changes", json=body)
    assert response.status_code == 422, response.text
    assert [problem["field"] for problem in response.json()["errors"]] == ["note"]
    assert "AB123456C" not in response.text


async def test_a_change_whose_author_or_purpose_is_personal_data_is_refused(
    metrics_url: str,
) -> None:
    # The pages record a change as the signed-in person, whose name a proxy may send as an
    # e-mail address: the service refuses it for every caller, naming the field only.
    change = ChangeIn.model_validate({"changed_at": "2026-03-01T00:00:00Z", "note": "new rota"})
    with pytest.raises(ProblemError) as refused:
        service.change_event("07700 900123", change, recorded_by="jo@example.com", now=NOW)
    assert refused.value.status == 422
    assert refused.value.problems == [
        FieldProblem(field="purpose", reason=REFUSED.format("a phone number")),
        FieldProblem(field="recorded_by", reason=REFUSED.format("an e-mail address")),
    ]
    assert planted_in(str(refused.value) + repr(refused.value.problems)) == []
    assert await stored_changes(metrics_url) == "[]"


@pytest.mark.parametrize("username", ["jo@example.com", "07700900123", "4111111111111111"])
def test_an_account_name_cannot_be_personal_data(username: str) -> None:
    with pytest.raises(ValueError, match=r"^the username looks like ") as refused:
        check_username(username)
    assert username not in str(refused.value)
    assert check_username("staff-4471") == "staff-4471"


REFUSED = "looks like {}; send an opaque reference, not personal data"
