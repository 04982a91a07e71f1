"""The pages over HTTP: nothing without signing in, sessions and CSRF, roles, proxy mode,
every figure equal to the JSON API's, CSV exports, and pages that work without the chart
libraries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.metrics.main import create_app
from shared.auth.settings import PeopleSettings
from tests.support.apps import ready, running
from tests.support.waiting import wait_until

from .conftest import PASSWORD, Site, _csrf_of, _site, sign_in

pytestmark = pytest.mark.integration


async def test_nothing_is_readable_without_signing_in(client: httpx.AsyncClient) -> None:
    for path in ("/", "/pages/overview", "/pages/purposes/pay%20my%20rent", "/pages/changes",
                 "/pages/failure-flow", "/pages/export/purposes.csv"):  # fmt: skip
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/pages/sign-in?next=")
        assert "pay my rent" not in answer.text
    htmx = await client.get("/pages/overview", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"].startswith("/pages/sign-in")
    assert (await client.get("/v1/purposes")).status_code == 401  # the API keeps its keys


async def test_a_wrong_password_is_refused_and_a_right_one_opens_a_session(
    client: httpx.AsyncClient,
) -> None:
    token = _csrf_of((await client.get("/pages/sign-in")).text)
    wrong = await client.post(
        "/pages/sign-in", data={"username": "ada", "password": "nope", "csrf_token": token}
    )
    assert wrong.status_code == 401
    assert "do not match" in wrong.text

    right = await client.post(
        "/pages/sign-in",
        data={"username": "ada", "password": PASSWORD, "csrf_token": token,
              "next": "/pages/changes"},
    )  # fmt: skip

    assert right.status_code == 303
    assert "script-src 'self'" in wrong.headers["content-security-policy"]
    assert wrong.headers["x-frame-options"] == "DENY"
    assert right.headers["location"] == "/pages/changes"
    cookie = right.headers["set-cookie"]
    assert "ds_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert (await client.get("/pages/changes")).status_code == 200


async def test_signing_in_needs_the_forms_csrf_token_and_never_redirects_away(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/pages/sign-in")
    forged = await client.post(
        "/pages/sign-in", data={"username": "ada", "password": PASSWORD, "csrf_token": "x"}
    )
    assert forged.status_code == 403
    token = _csrf_of(forged.text)
    away = await client.post(
        "/pages/sign-in",
        data={"username": "ada", "password": PASSWORD, "csrf_token": token,
              "next": "https://elsewhere.example/"},
    )  # fmt: skip
    assert away.headers["location"] == "/pages/overview"


async def _api(client: httpx.AsyncClient, site: Site, path: str) -> Any:
    answer = await client.get(path, headers=site.read_headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_the_overviews_figures_are_the_apis(client: httpx.AsyncClient, site: Site) -> None:
    await sign_in(client, "vic")
    html = (await client.get("/pages/overview")).text
    purposes = await _api(client, site, "/v1/purposes")

    assert _text_of(html, "total-volume") == f"{sum(p['volume'] for p in purposes):,}"
    assert _text_of(html, "total-failure") == f"{sum(p['failure'] for p in purposes):,}"
    overall = await _api(client, site, "/v1/demand/overall")
    headline = (
        overall["failure_share_estimate"]
        if overall["failure_share_status"] == "validated"
        else overall["failure_share"]
    )
    assert _text_of(html, "total-failure-share") == f"{headline * 100:.1f}%"
    for row in purposes:
        cells = re.search(
            rf'data-purpose="{re.escape(row["purpose"])}">.*?data-field="volume">(\d+)</td>'
            r'<td data-field="value">(\d+)</td><td data-field="failure">(\d+)</td>',
            html,
            re.S,
        )
        assert cells is not None, row["purpose"]
        assert [int(n) for n in cells.groups()] == [row["volume"], row["value"], row["failure"]]
    assert "/v1/demand/capacity" in html
    assert "/pages/export/capacity.csv" in html


async def test_a_charts_csv_is_the_apis_csv(client: httpx.AsyncClient, site: Site) -> None:
    await sign_in(client, "vic")
    for export, api in (
        ("purposes", "/v1/purposes"),
        ("by-channel", "/v1/demand/by-channel"),
        ("capacity", "/v1/demand/capacity?granularity=week"),
        ("failure-flow", "/v1/demand/failure-flow"),
    ):
        page = await client.get(f"/pages/export/{export}.csv")
        direct = await client.get(api, headers={**site.read_headers, "Accept": "text/csv"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/csv")
        assert page.text == direct.text, export


async def test_capacity_says_what_it_measured_and_what_it_estimated(
    client: httpx.AsyncClient, site: Site
) -> None:
    rows = await _api(client, site, "/v1/demand/capacity")
    assert rows
    assert any(r["measured_demands"] for r in rows)  # phone demands carry handling_seconds
    assert any(r["failure_demands"] > r["measured_demands"] for r in rows)  # e-mails do not
    for r in rows:
        assert r["hours"] == pytest.approx(r["measured_hours"] + r["estimated_hours"], abs=0.02)
    await sign_in(client, "vic")
    html = (await client.get("/pages/overview")).text
    assert "configured average" in html
    assert "phone 7 min" in html


async def test_recording_a_change_needs_a_reviewer_and_the_csrf_token(
    client: httpx.AsyncClient, site: Site
) -> None:
    change = {
        "purpose": "report a repair",
        "changed_at": "2026-03-09T00:00",
        "note": "Visits booked",
    }
    await ready(client)  # a change is published: the producer must be connected
    token = await sign_in(client, "vic")
    assert (
        await client.post("/pages/changes", data={**change, "csrf_token": token})
    ).status_code == 403

    client.cookies.clear()
    token = await sign_in(client, "rey")
    without = await client.post("/pages/changes", data=change)
    wrong = await client.post("/pages/changes", data={**change, "csrf_token": token + "x"})
    by_header = await client.post("/pages/changes", data=change, headers={"X-CSRF-Token": token})

    assert without.status_code == 403
    assert wrong.status_code == 403
    assert by_header.status_code == 303, by_header.text
    # Stored by the consumer before the answer: the page it leads to shows it, not "pending".
    assert "pending" not in by_header.headers["location"]
    listed = await _api(client, site, "/v1/purposes/report%20a%20repair/changes")
    assert [(c["note"], c["recorded_by"]) for c in listed] == [("Visits booked", "rey")]
    page = (await client.get("/pages/changes")).text
    assert "Visits booked" in page
    assert "rey" in page


async def test_a_change_not_yet_stored_is_recorded_and_the_page_says_it_appears_soon(
    site: Site,
) -> None:
    app = create_app(site.settings)
    async with running(app) as client:
        await ready(client)
        # The consumer stopped (a rebalance, a database away): nothing stores the change.
        supervisor = app.state.supervisor
        supervisor.stop_task("consumer")
        await wait_until(
            lambda: _finished(supervisor.status()["consumer"]), timeout=30, what="consumer stopped"
        )
        app.state.components.changes.visible_within_s = 0.5
        token = await sign_in(client, "rey")
        change = {"purpose": "pay my rent", "changed_at": "2026-03-09T00:00", "note": "New rota"}

        answer = await client.post("/pages/changes", data={**change, "csrf_token": token})

        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/pages/changes?recorded=pay%20my%20rent&pending=1"
        page = (await client.get(answer.headers["location"])).text
        assert "Recorded a change for pay my rent. It is not stored yet" in page
        assert "New rota" not in page  # not listed until the consumer has stored it


async def _finished(status: str) -> bool:
    return status == "finished"


async def test_signing_out_ends_the_session(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "vic")
    assert (await client.post("/pages/sign-out")).status_code == 403  # CSRF here too
    out = await client.post("/pages/sign-out", data={"csrf_token": token})
    assert out.status_code == 303
    assert (await client.get("/pages/overview")).status_code == 303


async def test_a_disabled_account_is_signed_out_at_its_next_request(
    client: httpx.AsyncClient, site: Site
) -> None:
    from shared.auth.account_store import AccountStore

    await sign_in(client, "vic")
    store = AccountStore(site.settings.auth.database_url)
    await store.disable("vic")
    await store.close()
    assert (await client.get("/pages/overview")).status_code == 303


async def test_behind_a_trusted_proxy_its_header_names_the_person(
    seeded_template: Any, tmp_path: Path, kafka_settings: Any, unique_group: str
) -> None:
    site = _site(
        seeded_template, tmp_path, kafka_settings, unique_group,
        trusted_proxy_header="X-Forwarded-User", trusted_proxy_role_header="X-Forwarded-Role",
    )  # fmt: skip
    async with running(create_app(site.settings)) as client:
        await ready(client)
        anonymous = await client.get("/pages/overview")
        viewer = await client.get("/pages/overview", headers={"X-Forwarded-User": "kim"})
        token = _csrf_of(viewer.text)
        refused = await client.post(
            "/pages/changes",
            data={"purpose": "pay my rent", "changed_at": "2026-03-09T00:00", "note": "x",
                  "csrf_token": token},
            headers={"X-Forwarded-User": "kim"},
        )  # fmt: skip
        allowed = await client.post(
            "/pages/changes",
            data={"purpose": "pay my rent", "changed_at": "2026-03-09T00:00", "note": "x",
                  "csrf_token": token},
            headers={"X-Forwarded-User": "kim", "X-Forwarded-Role": "reviewer"},
        )  # fmt: skip
    assert anonymous.status_code == 303
    assert viewer.status_code == 200
    assert "kim (viewer)" in viewer.text
    assert refused.status_code == 403
    assert allowed.status_code == 303


async def test_pages_work_without_the_chart_libraries(site: Site, tmp_path: Path) -> None:
    site.settings.pages.assets_dir = tmp_path / "nothing-here"
    async with running(create_app(site.settings)) as client:
        await sign_in(client, "vic")
        html = (await client.get("/pages/overview")).text
    assert "Charts are unavailable" in html
    assert "make install" in html
    assert "<details open>" in html
    assert "/pages/vendor/vega.min.js" not in html


def test_a_weak_or_missing_session_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        PeopleSettings(environment="production")
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        PeopleSettings(environment="production", session_secret="changethis")
    assert PeopleSettings(environment="production", session_secret="x" * 40)
    assert PeopleSettings().session_secret is None  # development: a random one per process


def _text_of(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert found is not None, element_id
    return found.group(1).strip()


async def test_flow_examples_show_the_customers_words_only_while_retained(
    client: httpx.AsyncClient, site: Site
) -> None:
    from datetime import UTC, datetime

    from services.metrics.db.tables import QueueTextRow
    from shared.database.engine import create_engine, session_factory

    query = "cause=pay%20my%20rent&purpose=understand%20my%20rent%20statement"
    path = f"/v1/demand/failure-flow/examples?{query}"
    before = await _api(client, site, path)
    assert before
    assert all(e["words"] is None for e in before)
    engine = create_engine(site.settings.database_url)
    async with session_factory(engine).begin() as session:
        session.add(
            QueueTextRow(
                source=before[0]["source"],
                demand_id=before[0]["demand_id"],
                text="I don't understand the new statement",
                received_at=datetime.now(UTC),
            )
        )
    await engine.dispose()

    after = await _api(client, site, path)
    await sign_in(client, "vic")
    fragment = await client.get(
        f"/pages/failure-flow/examples?{query}",
        headers={"HX-Request": "true"},
    )

    assert after[0]["words"] == "I don't understand the new statement"
    assert "<q>I don&#39;t understand the new statement</q>" in fragment.text
    assert "<html" not in fragment.text  # a fragment for htmx, not a page
    assert "no longer retained" in fragment.text  # the others' words are gone
