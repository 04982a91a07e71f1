"""The HTTP API: keys and scopes, filters refused clearly, CSV, changes that move baselines."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from services.metrics.main import create_app
from shared.database.engine import create_engine, session_factory
from shared.events import CaseEventType, DemandType, Event
from shared.kafka.settings import KafkaSettings
from tests.support.apps import running
from tests.support.factories import case_event, demand_classified

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
        yield http


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
    assert bad_period.json()["detail"]["field"] == "period"
    assert "2026-13" in bad_period.json()["detail"]["detail"]
    assert bad_channel.status_code == 422


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
    assert by_accept.text.splitlines()[0] == "channel,volume,value,failure,unknown,failure_share"


async def test_unknown_purpose_and_case_are_404(client: httpx.AsyncClient, auth: Any) -> None:
    assert (await client.get("/v1/purposes/nothing", headers=auth.read_headers)).status_code == 404
    assert (await client.get("/v1/cases/nothing", headers=auth.read_headers)).status_code == 404


async def _end_to_end_chart(client: httpx.AsyncClient, auth: Any) -> dict[str, Any]:
    detail = (await client.get("/v1/purposes/repair", headers=auth.read_headers)).json()
    charts: list[dict[str, Any]] = detail["charts"]
    (chart,) = [c for c in charts if c["measure"] == "end_to_end_seconds"]
    return chart
