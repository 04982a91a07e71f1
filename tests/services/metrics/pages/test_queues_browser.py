"""The review and audit queues in a real browser (Debian's Chromium, Playwright): five
demands reviewed with the keyboard alone, their labels on demand.labels with who made them
and the figures moved once the metrics consumer applied them; undo; an audit item answered
blind; axe-core on both pages; nothing fetched from any host but 127.0.0.1 (the context
fixture aborts and records any such request, and fails the test on one).

With DEMANDSCOPE_SCREENSHOTS=docs/screenshots the pages are saved too (review, audit).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shared.events import DemandLabelled
from shared.kafka.read_to_end import read_all
from shared.topics import Topic, topic_name

from . import test_browser
from .conftest import LiveSite, _run
from .queues_seed import keep_queue_words
from .test_browser import _api, _axe, _shot, _signed_in

# The browser context of the pages' tests: every request to a host but 127.0.0.1 aborted
# and failing the test, and so does any error in the browser.
context = test_browser.context
outside = test_browser.outside

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

NEXT_ITEM = """previous => {
  const item = document.querySelector('.queue-item');
  return item !== null && item.dataset.demandId !== previous;
}"""


@pytest.fixture(scope="module")
def live_site(live_site: LiveSite) -> LiveSite:
    """The pages' live site with the queues' words kept (queues_seed.py)."""
    assert _run(keep_queue_words(live_site.site.settings.database_url)) > 0
    return live_site


async def _labels(live: LiveSite) -> list[DemandLabelled]:
    kafka = live.site.settings.kafka
    records = await read_all(kafka, [topic_name(kafka, Topic.DEMAND_LABELS)])
    return [DemandLabelled.model_validate_json(r.value) for r in records]


async def _current(page: Any) -> tuple[str, str | None]:
    item = page.locator(".queue-item")
    return await item.get_attribute("data-demand-id"), await item.get_attribute(
        "data-suggested-type"
    )


async def _eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.25)


async def test_five_demands_reviewed_with_the_keyboard_alone(
    live_site: LiveSite, context: Any
) -> None:
    before = _api(live_site, "/v1/demand/overall")
    page = await _signed_in(context, live_site, "rey")
    await page.goto(f"{live_site.url}/pages/review")
    await _shot(page, "review")

    decided: dict[str, str] = {}  # demand -> the type given (the machine's, flipped)
    suggested: dict[str, str | None] = {}
    for _ in range(5):
        demand_id, machine = await _current(page)
        given = "value" if machine == "failure" else "failure"
        await page.keyboard.press("v" if given == "value" else "f")
        if given == "failure":
            await page.keyboard.press("k")  # a failure kind: the first
        await page.keyboard.press("Enter")
        await page.wait_for_function(NEXT_ITEM, arg=demand_id)
        decided[demand_id], suggested[demand_id] = given, machine
    assert await page.locator("#recent tbody tr").count() == 5

    async def published() -> list[DemandLabelled]:
        mine = [x for x in await _labels(live_site) if x.demand_id in decided]
        return mine if len(mine) == 5 else []

    labels = await _eventually(published)
    assert {(x.demand_id, x.demand_type, x.reason, x.labelled_by) for x in labels} == {
        (d, given, "review", "rey") for d, given in decided.items()
    }

    was_failure = sum(1 for d in decided if suggested[d] == "failure")
    now_failure = sum(1 for g in decided.values() if g == "failure")
    expected = before["failure"] + now_failure - was_failure

    async def applied() -> bool:
        return bool(_api(live_site, "/v1/demand/overall")["failure"] == expected)

    assert await _eventually(applied), "the figures did not take the five labels"

    # Backspace: the last decision undone, by a new label restoring the machine's word.
    last = list(decided)[-1]
    await page.keyboard.press("Backspace")
    await page.wait_for_function(
        "id => document.querySelector('.queue-item')?.dataset.demandId === id", arg=last
    )

    async def restored() -> list[DemandLabelled]:
        return [
            x for x in await _labels(live_site) if x.demand_id == last and x.id not in
            {label.id for label in labels}
        ]  # fmt: skip

    undo = await _eventually(restored)
    assert [(x.demand_type, x.reason, x.labelled_by) for x in undo] == [
        (suggested[last], "review", "rey")
    ]


async def test_an_audit_item_is_answered_blind(live_site: LiveSite, context: Any) -> None:
    page = await _signed_in(context, live_site, "rey")
    await page.goto(f"{live_site.url}/pages/audit")
    demand_id, machine = await _current(page)
    assert machine is None
    assert await page.locator("#machine-said, .suggestion, [data-suggested-type]").count() == 0
    assert await page.locator("#q-purpose").input_value() == ""  # nothing pre-filled
    await _shot(page, "audit")

    await page.keyboard.press("f")
    await page.keyboard.press("1")
    await page.keyboard.press("Enter")
    await page.wait_for_function(NEXT_ITEM, arg=demand_id)

    assert await page.locator("#machine-said").is_visible()  # shown once answered

    async def answered() -> list[DemandLabelled]:
        return [x for x in await _labels(live_site) if x.demand_id == demand_id]

    labels = await _eventually(answered)
    assert [(x.reason, x.labelled_by, x.demand_type) for x in labels] == [
        ("audit", "rey", "failure")
    ]


async def test_the_queues_pass_axe(live_site: LiveSite, context: Any) -> None:
    page = await _signed_in(context, live_site, "rey")
    failures = {}
    for name in ("review", "audit"):
        await page.goto(f"{live_site.url}/pages/{name}")
        failures[name] = await _axe(page)
    assert failures == {"review": [], "audit": []}


async def test_not_a_demand_with_the_n_key_in_both_queues(
    live_site: LiveSite, context: Any
) -> None:
    """N answers "not a demand": the label says so (type unknown, no kind), keeps the
    purpose the contact was filed under (the audit's blind form needs none), and the
    figures count the audited answer."""
    before = _api(live_site, "/v1/demand/overall")["not_a_demand_audited"]
    page = await _signed_in(context, live_site, "rey")

    await page.goto(f"{live_site.url}/pages/review")
    reviewed, _ = await _current(page)
    filed = await page.locator("#q-purpose").input_value()  # the machine's, pre-filled
    await page.keyboard.press("n")
    await page.keyboard.press("Enter")
    await page.wait_for_function(NEXT_ITEM, arg=reviewed)
    assert "not a demand" in await page.locator("#recent tbody tr").first.inner_text()

    await page.goto(f"{live_site.url}/pages/audit")
    audited, _ = await _current(page)
    await page.keyboard.press("n")
    await page.keyboard.press("Enter")
    await page.wait_for_function(NEXT_ITEM, arg=audited)
    assert "not a demand" in await page.locator("#reveal").inner_text()

    async def answered() -> list[DemandLabelled]:
        # The reviewed demand may be the one the first test undid: labelled before.
        ours = (reviewed, audited)
        mine = [x for x in await _labels(live_site) if x.demand_id in ours and x.not_a_demand]
        return mine if len(mine) == 2 else []

    labels = {x.demand_id: x for x in await _eventually(answered)}
    assert [
        (x.not_a_demand, x.demand_type, x.failure_kind, x.reason)
        for x in (labels[reviewed], labels[audited])
    ] == [(True, "unknown", None, "review"), (True, "unknown", None, "audit")]
    assert labels[reviewed].purpose == filed
    assert labels[audited].purpose  # the machine's first purpose, never shown before

    async def counted() -> bool:
        now = _api(live_site, "/v1/demand/overall")["not_a_demand_audited"]
        return bool(now == before + 1)

    assert await _eventually(counted), "the figures did not count the audit's answer"

    # Where the failure share is shown: the share among demands, and how many were not.
    overall = _api(live_site, "/v1/demand/overall")
    assert overall["failure_share_status"] == "validated"  # the demo's audit is answered
    await page.goto(f"{live_site.url}/pages/overview")
    line = await page.locator("#not-a-demand").inner_text()
    assert "were not a demand" in line
    assert f"{overall['not_a_demand_audited']} of the audited said so" in " ".join(line.split())
