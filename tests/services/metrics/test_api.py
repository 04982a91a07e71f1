"""The HTTP API: keys and scopes, filters refused clearly, CSV, changes that move baselines."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.metrics.api import router
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from services.metrics.main import create_app
from shared.auth.keys import Scope
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, DemandType, Event, SystemChanged
from shared.kafka.codec import decode
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.service.collector import YOUNG_COLLECTION_AFTER
from shared.topics import Topic, topic_name
from tests.support.apps import ready, running
from tests.support.factories import case_event, demand_classified
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


# Case i starts at T0 + i days and takes (i % 3 + 1) days: 1, 2, 3, 1, 2, 3, ... days.
EVENTS: list[Event] = [
    e
    for i in range(24)
    for e in (
        demand_classified(
            id=f"d{i}",
            customer_ref=f"C{i}",
            case_ref=f"K{i}",
            occurred_at=T0 + i * DAY,
            team="north",
            purpose="repair",
            demand_type=DemandType.FAILURE if i % 4 == 0 else DemandType.VALUE,
            failure_kind="repeat" if i % 4 == 0 else None,
        ),
        case_event(
            id=f"f{i}",
            customer_ref=f"C{i}",
            case_ref=f"K{i}",
            type=CaseEventType.FULFILLED,
            occurred_at=T0 + i * DAY + (i % 3 + 1) * DAY,
        ),
    )
]


@pytest.fixture
async def client(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_group: str, auth: Any
) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    async with session_factory(engine).begin() as session:
        await apply_events(session, EVENTS)
    await engine.dispose()
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=url, group_id=unique_group, auth=auth.settings,
        baseline_points=6,
    )  # fmt: skip
    async with running(create_app(settings)) as http:
        await ready(http)
        yield http


async def test_while_it_serves_young_objects_are_collected_less_often(
    client: httpx.AsyncClient,
) -> None:
    # Every service's collector policy (shared.service.collector); undone when it stops.
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_AFTER


async def test_reads_need_a_key_with_the_read_scope(client: httpx.AsyncClient, auth: Any) -> None:
    missing = await client.get("/v1/purposes")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/purposes", headers={"X-API-Key": "ds_nope"})).status_code == 401
    assert (await client.get("/v1/purposes", headers=auth.read_headers)).status_code == 200


async def test_recording_a_change_needs_the_labels_write_scope(
    client: httpx.AsyncClient, auth: Any
) -> None:
    body = {"changed_at": (T0 + 12 * DAY).isoformat(), "note": "visits booked on first call"}

    refused = await client.post("/v1/purposes/repair/changes", json=body, headers=auth.read_headers)
    accepted = await client.post(
        "/v1/purposes/repair/changes", json=body, headers=auth.change_headers
    )

    assert refused.status_code == 403
    assert accepted.status_code == 201, accepted.text
    listed = await client.get("/v1/purposes/repair/changes", headers=auth.read_headers)
    assert [c["note"] for c in listed.json()] == ["visits booked on first call"]


async def test_a_sources_own_key_cannot_record_a_change_for_the_organisation(
    client: httpx.AsyncClient, auth: Any
) -> None:
    store = ApiKeyStore(auth.settings.database_url)
    try:
        source_key, _ = await store.create("genesys-eu", [Scope.READ, Scope.LABELS_WRITE])
    finally:
        await store.close()
    body = {"changed_at": (T0 + 12 * DAY).isoformat(), "note": "visits booked on first call"}

    refused = await client.post(
        "/v1/purposes/repair/changes", json=body, headers={"X-API-Key": source_key}
    )

    assert refused.status_code == 403
    assert "sources:all" in refused.json()["detail"]
    listed = await client.get("/v1/purposes/repair/changes", headers=auth.read_headers)
    assert listed.json() == []


async def test_a_recorded_change_and_only_that_moves_the_baseline(
    client: httpx.AsyncClient, auth: Any
) -> None:
    before = await _end_to_end_chart(client, auth)
    # Baseline = the first 6 cases in order of fulfilment: cases 0, 1, 3, 2, 4, 6 (done on
    # days 1, 3, 4, 5, 6, 7) taking 1, 2, 1, 3, 2, 1 days -> centre 10/6 days = 144 000 s;
    # moving ranges 1, 1, 2, 1, 1 days -> mR-bar 1.2 days = 103 680 s;
    # UNPL = 144 000 + 2.66 x 103 680 = 419 788.8 s; URL = 3.268 x 103 680 = 338 826.24 s.
    assert before["centre_line"] == pytest.approx(144_000)
    assert before["upper_natural_process_limit"] == pytest.approx(419_788.8)
    assert before["upper_range_limit"] == pytest.approx(338_826.24)
    assert before["baseline_from"] == (T0 + DAY).isoformat().replace("+00:00", "Z")
    assert before["provisional"] is False

    await client.post(
        "/v1/purposes/repair/changes",
        json={"changed_at": (T0 + 12 * DAY).isoformat(), "note": "new process"},
        headers=auth.change_headers,
    )
    after = await _end_to_end_chart(client, auth)

    # Cases fulfilled from day 12 on: the case starting day 10 (ends day 12) is the first.
    assert after["baseline_from"] == (T0 + 12 * DAY).isoformat().replace("+00:00", "Z")
    assert after["points"][0]["at"] == after["baseline_from"]


async def test_bad_filters_are_refused_with_the_reason(
    client: httpx.AsyncClient, auth: Any
) -> None:
    bad_period = await client.get("/v1/purposes?period=2026-13", headers=auth.read_headers)
    bad_channel = await client.get("/v1/purposes?channel=pigeon", headers=auth.read_headers)

    assert bad_period.status_code == 422
    assert bad_period.headers["content-type"] == "application/problem+json"
    (problem,) = bad_period.json()["errors"]
    assert problem["field"] == "query.period"
    assert "2026-13" in problem["reason"]
    assert bad_channel.status_code == 422
    assert [p["field"] for p in bad_channel.json()["errors"]] == ["query.channel"]


async def test_a_period_filter_counts_only_its_demands(
    client: httpx.AsyncClient, auth: Any
) -> None:
    # Demands on days 0..6 of the week of 2026-03-02 (ISO week 10): d0..d6, d0 and d4 failure.
    rows = (await client.get("/v1/purposes?period=2026-W10", headers=auth.read_headers)).json()

    assert [(r["volume"], r["value"], r["failure"]) for r in rows] == [(7, 5, 2)]


async def test_tables_export_as_csv(client: httpx.AsyncClient, auth: Any) -> None:
    by_query = await client.get("/v1/purposes?format=csv", headers=auth.read_headers)
    by_accept = await client.get(
        "/v1/demand/by-channel", headers={**auth.read_headers, "Accept": "text/csv"}
    )

    assert by_query.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(by_query.text)))
    assert row["purpose"] == "repair"
    assert row["volume"] == "24"
    assert row["failure"] == "6"
    assert float(row["end_to_end.p50_seconds"]) == 2 * 86_400
    # The columns before issue 11 where they were (a reader by position), the new ones last.
    assert by_query.text.splitlines()[0] == (
        "purpose,volume,value,failure,unknown,failure_share,failure_share_estimate,"
        "failure_share_ci_low,failure_share_ci_high,failure_share_audited,failure_share_status,"
        "cases_fulfilled,open_cases,end_to_end.p50_seconds,end_to_end.p85_seconds,"
        "end_to_end.p95_seconds,contacts_per_case,one_stop_share,"
        "not_a_demand_share,not_a_demand_ci_low,not_a_demand_ci_high,not_a_demand_audited"
    )
    assert by_accept.text.splitlines()[0] == (
        "channel,volume,value,failure,unknown,failure_share,failure_share_estimate,"
        "failure_share_ci_low,failure_share_ci_high,failure_share_audited,failure_share_status,"
        "not_a_demand_share,not_a_demand_ci_low,not_a_demand_ci_high,not_a_demand_audited"
    )
    (channel,) = list(csv.DictReader(io.StringIO(by_accept.text)))
    assert channel["failure_share_status"] == "not yet validated"  # no audit: no interval
    assert channel["failure_share_estimate"] == channel["failure_share_ci_low"] == ""


async def test_unknown_purpose_and_case_are_404(client: httpx.AsyncClient, auth: Any) -> None:
    purpose = await client.get("/v1/purposes/nothing", headers=auth.read_headers)
    case = await client.get("/v1/cases/nothing", headers=auth.read_headers)

    for response in (purpose, case):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 404
    assert "'nothing'" in purpose.json()["detail"]


async def _end_to_end_chart(client: httpx.AsyncClient, auth: Any) -> dict[str, Any]:
    detail = (await client.get("/v1/purposes/repair", headers=auth.read_headers)).json()
    charts: list[dict[str, Any]] = detail["charts"]
    (chart,) = [c for c in charts if c["measure"] == "end_to_end_seconds"]
    return chart


CHANGES = "/v1/purposes/repair/changes"


@pytest.mark.parametrize(
    "changed_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00", "10000-01-01T00:00Z"]
)
async def test_a_change_date_that_cannot_be_stored_is_a_422_naming_the_field(
    client: httpx.AsyncClient, auth: Any, changed_at: str
) -> None:
    # Issue 10 (5): year 1 at +14:00 has no UTC equivalent; it answered 500.
    response = await client.post(
        CHANGES, json={"changed_at": changed_at, "note": "new process"}, headers=auth.change_headers
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [p["field"] for p in response.json()["errors"]] == ["changed_at"]


@pytest.mark.parametrize("changed_at", [0, 1_700_000_000, 1.5, "1700000000", "2026-03-01", True])
async def test_a_change_date_must_be_written_in_iso_8601(
    client: httpx.AsyncClient, auth: Any, changed_at: Any
) -> None:
    # Issue 10 (5): `changed_at: 0` was taken as 1970-01-01 and moved every baseline.
    response = await client.post(
        CHANGES, json={"changed_at": changed_at, "note": "new process"}, headers=auth.change_headers
    )

    assert response.status_code == 422, response.text
    (problem,) = response.json()["errors"]
    assert problem["field"] == "changed_at"
    assert "ISO 8601" in problem["reason"]
    listed = await client.get(CHANGES, headers=auth.read_headers)
    assert listed.json() == []


async def test_changes_at_the_edges_of_the_calendar_are_kept_and_read(
    client: httpx.AsyncClient, auth: Any
) -> None:
    for changed_at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        response = await client.post(
            CHANGES, json={"changed_at": changed_at, "note": "edge"}, headers=auth.change_headers
        )
        assert response.status_code == 201, response.text

    assert (await client.get("/v1/purposes/repair", headers=auth.read_headers)).status_code == 200
    listed = await client.get(CHANGES, headers=auth.read_headers)
    assert [c["changed_at"][:4] for c in listed.json()] == ["0001", "9999"]


async def test_a_change_the_consumer_has_not_stored_in_time_is_accepted_with_where_it_will_be(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_group: str, auth: Any
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=url, group_id=unique_group, auth=auth.settings
    )
    app = create_app(settings)
    async with running(app) as client:
        await ready(client)
        # The consumer stopped (a rebalance, a database away): nothing stores the change.
        supervisor = app.state.supervisor
        supervisor.stop_task("consumer")
        await wait_until(
            lambda: _finished(supervisor.status()["consumer"]), timeout=30, what="consumer stopped"
        )
        app.state.components.changes.visible_within_s = 0.5
        body = {"changed_at": (T0 + 12 * DAY).isoformat(), "note": "new process"}

        response = await client.post(CHANGES, json=body, headers=auth.change_headers)

        assert response.status_code == 202, response.text
        assert response.headers["location"] == CHANGES
        accepted = response.json()
        assert accepted["status"] == "accepted"
        assert accepted["changes_url"] == CHANGES
        assert (await client.get(CHANGES, headers=auth.read_headers)).json() == []
    # Recorded all the same: on system.changes, acknowledged, for the consumer to store.
    topic = topic_name(kafka_settings, Topic.SYSTEM_CHANGES)
    (record,) = await read_all(kafka_settings, [topic])
    change = decode(SystemChanged, record.value)
    assert (change.id, change.purpose, change.note) == (
        accepted["change_id"],
        "repair",
        "new process",
    )
    assert record.key == b"repair"


async def _finished(status: str) -> bool:
    return status == "finished"


@pytest.mark.parametrize(
    "period", ["9999-W52", "9999-12-31T00:00:00Z/P2D", "0001-01-01T00:00+14:00/P1D"]
)
async def test_a_period_outside_the_calendar_is_a_422(
    client: httpx.AsyncClient, auth: Any, period: str
) -> None:
    response = await client.get(
        "/v1/purposes", params={"period": period}, headers=auth.read_headers
    )

    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["errors"]] == ["query.period"]


class Chunks:
    """A chunked body of ``count`` MiB, made as it is read, counting what was taken."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b" " * MIB
        for _ in range(self.count):
            self.taken += len(chunk)
            yield chunk


MIB = 1024 * 1024


async def test_a_write_without_a_key_is_refused_before_its_body_is_read(
    client: httpx.AsyncClient,
) -> None:
    # Issue 10 (8): a 300 MB chunked body without a key was read whole, then answered 422.
    body = Chunks(300)
    started = time.monotonic()

    response = await client.post(
        CHANGES, content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert body.taken <= MIB
    assert time.monotonic() - started < 5


async def test_a_body_past_the_limit_is_refused_while_it_streams(
    client: httpx.AsyncClient, auth: Any
) -> None:
    body = Chunks(300)

    response = await client.post(
        CHANGES, content=body, headers={**auth.change_headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413
    # The limit is 64 KiB: refused within the first chunk past it, not after 300 MiB.
    assert body.taken <= MIB


async def test_a_declared_length_past_the_limit_is_refused_after_the_key(
    client: httpx.AsyncClient, auth: Any
) -> None:
    body = b'{"changed_at": "2026-03-01T00:00:00Z", "note": "' + b"x" * 70_000 + b'"}'
    headers = {"Content-Type": "application/json"}

    unauthenticated = await client.post(CHANGES, content=body, headers=headers)
    too_large = await client.post(CHANGES, content=body, headers={**headers, **auth.change_headers})

    assert unauthenticated.status_code == 401
    assert too_large.status_code == 413


def test_no_route_has_a_body_read_before_its_key_is_checked() -> None:
    # FastAPI reads a body parameter before any dependency runs (the key check included):
    # a write route takes its body as a dependency declared after the scope instead.
    routes = [route for route in router.routes if isinstance(route, APIRoute)]

    assert any("POST" in (route.methods or ()) for route in routes)
    assert [route.path for route in routes if route.body_field is not None] == []


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[int]:
    """``app`` behind a real uvicorn on a free port (its lifespan included)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: _now(server.started or serving.done()), what="uvicorn started")
        assert server.started, "uvicorn did not start"
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await serving


async def _now(value: bool) -> bool:
    return value


async def _post_chunked_until_answered(port: int, headers: dict[str, str]) -> tuple[bytes, int]:
    """POST 300 MiB chunked, reading the answer as it comes: (status line, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {CHANGES} HTTP/1.1\r\nHost: metrics\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n")
    chunk = b" " * (64 * 1024)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0

    async def pump() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            for _ in range(300 * 16):
                writer.write(frame)
                await writer.drain()
                sent += len(chunk)

    pumping = asyncio.create_task(pump())
    try:
        status = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return status, sent


async def test_a_real_server_answers_before_the_body_is_read(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_group: str, auth: Any
) -> None:
    # Issue 10 (8), as reported: a 300 MB chunked POST without a key, over a socket.
    url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = MetricsSettings(
        kafka=kafka_settings, database_url=url, group_id=unique_group, auth=auth.settings
    )
    async with served(create_app(settings)) as port:
        unauthenticated, sent_without_key = await _post_chunked_until_answered(port, {})
        too_large, sent_with_key = await _post_chunked_until_answered(port, auth.change_headers)

    assert unauthenticated.startswith(b"HTTP/1.1 401 ")
    assert too_large.startswith(b"HTTP/1.1 413 ")
    # What the sockets' buffers hold, at most (about 4 MiB here): never the 300 MiB.
    assert sent_without_key < 32 * MIB
    assert sent_with_key < 32 * MIB


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"changed_at": ' + b"9" * 5000 + b', "note": "x"}',
        b"\xff\xfe",
        b"",
    ],
    ids=["nested", "long number", "not utf-8", "empty"],
)
async def test_a_change_body_that_is_not_json_is_a_422(
    client: httpx.AsyncClient, auth: Any, body: bytes
) -> None:
    response = await client.post(
        CHANGES, content=body, headers={**auth.change_headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["errors"]] == ["body"]
