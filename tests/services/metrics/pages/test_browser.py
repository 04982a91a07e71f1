"""The pages in a real browser (Debian's Chromium, driven by Playwright): signing in, figures
equal to the JSON API's, capability charts drawn with their limits and rebased by a recorded
change, roles and CSRF, nothing fetched from any host but 127.0.0.1, and no serious or
critical accessibility violation (axe-core, vendored) on any page.

With DEMANDSCOPE_SCREENSHOTS=docs/screenshots the tests also save each page, at 1280x800,
on the demo data set (README, "What you will see").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlparse

import httpx
import pytest
import pytest_asyncio

from .conftest import PASSWORD, ROOT, LiveSite

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

REPAIR = "report a repair"
PAGES = {
    "overview": "/pages/overview",
    "purpose": f"/pages/purposes/{quote(REPAIR)}",
    "failure-flow": "/pages/failure-flow",
    "changes": "/pages/changes",
}


@pytest.fixture
def outside() -> list[str]:
    """Requests the browser tried to send anywhere but 127.0.0.1 (each was aborted)."""
    return []


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Any, outside: list[str]) -> AsyncIterator[Any]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})

    async def only_local(route: Any) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await ctx.route("**/*", only_local)
    errors: list[str] = []
    ctx.on("weberror", lambda error: errors.append(str(error.error)))
    ctx.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    try:
        yield ctx
    finally:
        await ctx.close()
    assert outside == [], f"the pages tried to fetch from outside: {outside}"
    assert errors == [], f"errors in the browser: {errors}"


async def _signed_in(context: Any, live: LiveSite, username: str) -> Any:
    page = await context.new_page()
    await page.goto(f"{live.url}/pages/overview")
    assert "/pages/sign-in" in page.url  # nothing without signing in
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r".*/pages/overview$"))
    return page


def _api(live: LiveSite, path: str) -> Any:
    answer = httpx.get(f"{live.url}{path}", headers=live.site.read_headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _drawn(page: Any, count: int) -> None:
    try:
        await page.wait_for_function(
            f"document.querySelectorAll('[data-chart][data-drawn=yes]').length >= {count}",
            timeout=30_000,
        )
    except Exception:
        states = await page.locator("[data-chart]").evaluate_all(
            "nodes => nodes.map(n => [n.dataset.chart, n.dataset.drawn, n.textContent])"
        )
        raise AssertionError(f"charts not drawn: {states}") from None


async def _spec(page: Any, chart: str) -> Any:
    return json.loads(await page.locator(f'script[data-chart-spec="{chart}"]').text_content())


async def _shot(page: Any, name: str, at: str | None = None) -> None:
    """Save the viewport (1280x800), scrolled so that ``at`` is at its top, when asked to."""
    folder = os.environ.get("DEMANDSCOPE_SCREENSHOTS")
    if folder:
        target = ROOT / folder
        target.mkdir(parents=True, exist_ok=True)
        if at is not None:
            await page.locator(at).evaluate("node => window.scrollTo(0, node.offsetTop - 8)")
        await page.screenshot(path=str(target / f"{name}.png"))


async def test_the_overview_shows_the_apis_figures(live_site: LiveSite, context: Any) -> None:
    page = await _signed_in(context, live_site, "vic")
    purposes = _api(live_site, "/v1/purposes")
    await _drawn(page, 4)

    assert (
        await page.locator("#total-volume").inner_text()
        == f"{sum(p['volume'] for p in purposes):,}"
    )
    assert (
        await page.locator("#total-failure").inner_text()
        == f"{sum(p['failure'] for p in purposes):,}"
    )
    shown = await page.locator("#purposes tbody tr th").all_inner_texts()
    assert shown == [p["purpose"] for p in purposes]  # ranked as the API ranks them
    for p in purposes:
        row = page.locator(f'#purposes tr[data-purpose="{p["purpose"]}"]')
        assert await row.locator('[data-field="failure"]').inner_text() == str(p["failure"])
    trend = await _spec(page, "trend")
    over_time = _api(live_site, "/v1/demand/over-time?granularity=week")
    failures = sum(v["demands"] for v in trend["data"]["values"] if v["type"] == "failure")
    assert failures == sum(r["failure"] for r in over_time)
    assert await page.locator("#chart-trend svg").count() == 1
    await _shot(page, "overview")
    await _shot(page, "overview-charts", at="#charts-h")
    await _shot(page, "overview-capacity", at="#capacity-h")


async def test_a_purpose_shows_its_capability_chart_with_its_limits(
    live_site: LiveSite, context: Any
) -> None:
    page = await _signed_in(context, live_site, "vic")
    await page.goto(f"{live_site.url}{PAGES['purpose']}")
    await _drawn(page, 6)
    detail = _api(live_site, f"/v1/purposes/{quote(REPAIR)}")
    [chart] = [c for c in detail["charts"] if c["measure"] == "end_to_end_seconds"]

    spec = await _spec(page, "xmr-end_to_end_seconds")
    assert spec["usermeta"]["centre_line"] == pytest.approx(chart["centre_line"])
    assert spec["usermeta"]["upper_natural_process_limit"] == pytest.approx(
        chart["upper_natural_process_limit"]
    )
    drawn = page.locator("#chart-xmr-end_to_end_seconds svg")
    labels = await drawn.locator("[role=graphics-symbol]").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('aria-label') || '')"
    )
    assert any(label.startswith("Upper natural process limit") for label in labels)
    assert any(label.startswith("Centre line") for label in labels)
    points = [label for label in labels if re.match(r"\d{4}-\d{2}-\d{2}: ", label)]
    assert len(points) == len(chart["points"])
    # The shift three weeks ago shows as special-cause points (Making Data Count colours).
    assert any("special cause" in label for label in points)
    assert await page.locator(".variation svg[role=img]").count() == 2
    await _shot(page, "purpose", at="#capability-h")


async def test_recording_a_change_rebases_the_limits(live_site: LiveSite, context: Any) -> None:
    page = await _signed_in(context, live_site, "rey")
    await page.goto(f"{live_site.url}{PAGES['purpose']}")
    before = (await _spec(page, "xmr-end_to_end_seconds"))["usermeta"]

    await page.get_by_label("The system changed on (UTC)").first.fill("2026-03-09T00:00")
    await page.get_by_label("What changed, and why").first.fill(
        "Visits booked during the first call"
    )
    await page.get_by_role("button", name="Record the change").first.click()
    await page.wait_for_selector("text=Visits booked during the first call")
    await _drawn(page, 6)

    after = (await _spec(page, "xmr-end_to_end_seconds"))["usermeta"]
    detail = _api(live_site, f"/v1/purposes/{quote(REPAIR)}")
    [chart] = [c for c in detail["charts"] if c["measure"] == "end_to_end_seconds"]
    assert after["baseline_from"] >= "2026-03-09"
    assert after["baseline_from"] != before["baseline_from"]
    assert after["centre_line"] != pytest.approx(before["centre_line"])
    assert after["centre_line"] == pytest.approx(chart["centre_line"])
    changes = page.locator("#chart-xmr-end_to_end_seconds svg [role=graphics-symbol]")
    labels = await changes.evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('aria-label') || '')"
    )
    assert any(label.startswith("Change to the system recorded for 2026-03-09") for label in labels)


async def test_a_viewer_cannot_record_a_change_and_nobody_can_without_the_token(
    live_site: LiveSite, context: Any
) -> None:
    page = await _signed_in(context, live_site, "vic")
    token = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
    form = {"purpose": REPAIR, "changed_at": "2026-03-10T00:00", "note": "not allowed"}
    as_viewer = await page.request.post(
        f"{live_site.url}/pages/changes", form={**form, "csrf_token": token}, max_redirects=0
    )
    assert as_viewer.status == 403
    assert await page.locator("form.record").count() == 0

    await context.clear_cookies()
    reviewer = await _signed_in(context, live_site, "ada")
    no_token = await reviewer.request.post(
        f"{live_site.url}/pages/changes", form=form, max_redirects=0
    )
    assert no_token.status == 403
    notes = [c["note"] for c in _api(live_site, f"/v1/purposes/{quote(REPAIR)}/changes")]
    assert "not allowed" not in notes


async def test_the_failure_flow_shows_examples_on_click(live_site: LiveSite, context: Any) -> None:
    page = await _signed_in(context, live_site, "vic")
    await page.goto(f"{live_site.url}{PAGES['failure-flow']}")
    flow = _api(live_site, "/v1/demand/failure-flow")
    top = flow[0]
    cell = page.get_by_role(
        "link",
        name=f"{top['failure']} failure demands about {top['purpose']} caused by {top['cause']}",
    )
    await cell.click()
    await page.wait_for_selector("#examples li")
    assert page.url.endswith("/pages/failure-flow")  # htmx swapped the examples in
    assert await page.locator("#examples li").count() >= 1
    await _drawn(page, 1)
    await _shot(page, "failure-flow")


async def test_every_page_passes_axe_without_serious_or_critical_violations(
    live_site: LiveSite, context: Any
) -> None:
    page = await context.new_page()
    await page.goto(f"{live_site.url}/pages/sign-in")
    failures = {"sign-in": await _axe(page)}
    await _shot(page, "sign-in")
    page = await _signed_in(context, live_site, "ada")
    for name, path in PAGES.items():
        await page.goto(f"{live_site.url}{path}")
        await _drawn(
            page, await page.locator("[data-chart]").count()
        )  # axe checks the drawn charts too
        failures[name] = await _axe(page)
        if name == "changes":
            await _shot(page, name)
    assert failures == {name: [] for name in failures}


async def _axe(page: Any) -> list[str]:
    # From the app's own vendor folder: the pages' Content-Security-Policy refuses inline
    # scripts, which is how a script from a file would be injected.
    origin = "/".join(page.url.split("/", 3)[:3])
    await page.add_script_tag(url=f"{origin}/pages/vendor/axe.min.js")
    result = await page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
