"""The review and audit queue pages over HTTP: a viewer refused, CSRF on every POST, a
decision published on demand.labels with who made it, a double submit kept once, and the
audit item blind until answered."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from services.metrics.main import create_app
from shared.events import DemandLabelled
from shared.kafka.codec import OutboundRecord
from shared.kafka.producer import BrokerUnavailable
from shared.kafka.read_to_end import read_all
from shared.topics import Topic, topic_name
from tests.support.apps import running

from .conftest import Site, sign_in
from .queues_seed import keep_queue_words

pytestmark = pytest.mark.integration


@pytest.fixture
async def site(site: Site) -> Site:
    """The demo data set with its queues' words kept (queues_seed.py)."""
    assert await keep_queue_words(site.settings.database_url) > 0
    return site


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, name
    return found.group(1)


def _current(html: str) -> str:
    found = re.search(r'data-demand-id="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def _labels(site: Site) -> list[DemandLabelled]:
    topic = topic_name(site.settings.kafka, Topic.DEMAND_LABELS)
    records = await read_all(site.settings.kafka, [topic])
    return [DemandLabelled.model_validate_json(r.value) for r in records]


async def _ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 30
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the metrics app did not become ready"


async def test_a_viewer_is_refused_the_queues(client: httpx.AsyncClient) -> None:
    await sign_in(client, "vic")
    for path in ("/pages/review", "/pages/audit"):
        assert (await client.get(path)).status_code == 403, path
    overview = await client.get("/pages/overview")
    assert "Review queue" not in overview.text  # no link to a page a viewer cannot open


async def test_a_post_without_the_token_is_refused(client: httpx.AsyncClient) -> None:
    await sign_in(client, "rey")
    page = await client.get("/pages/review")
    assert page.status_code == 200
    form = {"demand_id": _current(page.text), "decision": "1", "demand_type": "value",
            "purpose": "report a repair"}  # fmt: skip
    for path in ("/pages/review/decide", "/pages/review/skip", "/pages/review/undo",
                 "/pages/audit/decide"):  # fmt: skip
        assert (await client.post(path, data=form)).status_code == 403, path


async def test_a_review_decision_is_a_label_and_a_double_submit_is_one(
    client: httpx.AsyncClient, site: Site
) -> None:
    await _ready(client)
    token = await sign_in(client, "rey")
    page = (await client.get("/pages/review")).text
    demand_id = _current(page)
    assert 'data-suggested-type="' in page  # the machine's suggestion, pre-filled
    form = {"csrf_token": token, "demand_id": demand_id, "decision": _field(page, "decision"),
            "demand_type": "failure", "failure_kind": "progress_chasing",
            "purpose": "report a repair"}  # fmt: skip

    first = await client.post("/pages/review/decide", data=form)
    again = await client.post("/pages/review/decide", data=form)

    assert first.status_code == again.status_code == 303
    labels = [label for label in await _labels(site) if label.demand_id == demand_id]
    assert len({label.id for label in labels}) == 1  # the same id twice: kept once
    label = labels[0]
    assert (label.reason, label.labelled_by, label.demand_type) == ("review", "rey", "failure")
    # People act for the organisation: the label names the demand's source (issue 10).
    assert label.demand_source == "demo"
    assert label.failure_kind == "progress_chasing"
    after = (await client.get("/pages/review")).text
    assert _current(after) != demand_id  # the next item, before the consumer applied it
    assert after.count(f'data-label="{label.id}"') == 1  # listed once among the last ten

    undo = await client.post("/pages/review/undo", data={"csrf_token": token})
    assert undo.status_code == 303
    restored = [x for x in await _labels(site) if x.demand_id == demand_id and x.id != label.id]
    assert len(restored) == 1
    assert restored[0].reason == "review"
    assert _current((await client.get("/pages/review")).text) == demand_id  # in front again


async def test_the_audit_item_is_blind_until_answered(
    client: httpx.AsyncClient, site: Site
) -> None:
    await _ready(client)
    token = await sign_in(client, "ada")
    page = (await client.get("/pages/audit")).text
    demand_id = _current(page)
    assert "machine-said" not in page
    assert "data-suggested-type" not in page
    assert "Choose a purpose" in page  # nothing pre-filled
    form = {"csrf_token": token, "demand_id": demand_id, "decision": _field(page, "decision"),
            "demand_type": "value", "purpose": "report a repair"}  # fmt: skip

    answered = await client.post("/pages/audit/decide", data=form)

    assert answered.status_code == 303
    shown = (await client.get(answered.headers["location"])).text
    assert 'id="machine-said"' in shown  # now shown, for learning
    assert _current(shown) != demand_id
    labels = [x for x in await _labels(site) if x.demand_id == demand_id]
    assert [(x.reason, x.labelled_by) for x in labels] == [("audit", "ada")]


async def test_confirm_all_matching_with_a_count_and_undo(
    client: httpx.AsyncClient, site: Site
) -> None:
    await _ready(client)
    token = await sign_in(client, "ada")
    page = (await client.get("/pages/review?purpose=report+a+repair")).text
    expected = int(_field(page, "expected"))
    assert f"Confirm all {expected} matching (report a repair)" in page
    form = {"csrf_token": token, "decision": _field(page, "decision"),
            "expected": str(expected), "filter_purpose": "report a repair"}  # fmt: skip

    done = await client.post("/pages/review/confirm-all", data=form)

    assert done.status_code == 303
    confirmed = int(re.search(r"confirmed=(\d+)", done.headers["location"]).group(1))  # type: ignore[union-attr]
    assert 0 < confirmed <= expected
    labels = [x for x in await _labels(site) if x.labelled_by == "ada"]
    assert len(labels) == confirmed
    assert {(x.reason, x.purpose) for x in labels} == {("review", "report a repair")}
    notice = (await client.get(done.headers["location"])).text
    assert f"for {confirmed} demands" in notice
    batch = _field(notice, "batch")

    undo = await client.post(
        "/pages/review/undo",
        data={"csrf_token": token, "batch": batch, "filter_purpose": "report a repair"},
    )
    assert undo.status_code == 303
    back = (await client.get("/pages/review?purpose=report+a+repair")).text
    assert _current(back) in {x.demand_id for x in labels}  # in front again, one at a time


async def test_a_label_the_broker_does_not_take_is_a_503(site: Site) -> None:
    app = create_app(site.settings)
    async with running(app) as client:
        token = await sign_in(client, "rey")
        page = (await client.get("/pages/review")).text

        async def refuse(records: list[OutboundRecord]) -> None:
            raise BrokerUnavailable("down")

        app.state.components.producer.send_and_wait = refuse
        answer = await client.post(
            "/pages/review/decide",
            data={"csrf_token": token, "demand_id": _current(page),
                  "decision": _field(page, "decision"), "demand_type": "value",
                  "purpose": "report a repair"},
        )  # fmt: skip

        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert _current((await client.get("/pages/review")).text) == _current(page)  # not moved on


async def test_an_answer_without_a_type_keeps_the_item_and_says_why(
    client: httpx.AsyncClient,
) -> None:
    token = await sign_in(client, "rey")
    page = (await client.get("/pages/audit")).text
    form = {"csrf_token": token, "demand_id": _current(page),
            "decision": _field(page, "decision"), "purpose": "report a repair"}  # fmt: skip

    answer = await client.post("/pages/audit/decide", data=form)

    assert answer.status_code == 303
    again = (await client.get(answer.headers["location"])).text
    assert 'id="missing"' in again
    assert "Choose value (V), failure (F) or not a demand (N) first." in again
    assert _current(again) == _current(page)
    assert 'id="recent"' in again
    assert "None yet." in again  # nothing decided


async def test_a_person_sees_every_sources_demands_and_labels_the_one_shown(
    client: httpx.AsyncClient, site: Site
) -> None:
    """People act for the organisation (issue 10, item 12): genesys's demand with the id of
    demo's first review item is shown too (it is surer of nothing: first), and the label
    the page publishes names genesys, not demo."""
    from datetime import UTC, datetime

    from services.metrics.db import review_entries
    from services.metrics.db.tables import Demand, QueueTextRow
    from services.metrics.db.write_path import demand_row
    from shared.database.engine import create_engine, session_factory
    from tests.support.factories import demand_classified

    await _ready(client)
    token = await sign_in(client, "rey")
    shared_id = _current((await client.get("/pages/review")).text)
    now = datetime.now(UTC)
    theirs = demand_classified(
        id=shared_id, source="genesys", occurred_at=now, confidence=0.0, purpose="billing"
    )
    engine = create_engine(site.settings.database_url)
    try:
        async with session_factory(engine).begin() as session:
            session.add(Demand(**demand_row(theirs)))
            session.add(
                QueueTextRow(
                    source="genesys", demand_id=shared_id, text="their words", received_at=now
                )
            )
            await session.flush()
            await review_entries.refresh(session, [("genesys", shared_id)])
    finally:
        await engine.dispose()

    page = (await client.get("/pages/review")).text
    assert (_current(page), _field(page, "demand_source")) == (shared_id, "genesys")
    assert "their words" in page
    form = {"csrf_token": token, "demand_id": shared_id, "demand_source": "genesys",
            "decision": _field(page, "decision"), "demand_type": "value",
            "purpose": "billing"}  # fmt: skip
    assert (await client.post("/pages/review/decide", data=form)).status_code == 303
    (label,) = [x for x in await _labels(site) if x.demand_id == shared_id]
    assert (label.demand_source, label.reason) == ("genesys", "review")
    # demo's demand of that id is next, still waiting for its own label.
    after = (await client.get("/pages/review")).text
    assert (_current(after), _field(after, "demand_source")) == (shared_id, "demo")


async def _counted(site: Site, source: str, demand_id: str) -> str:
    """The purpose the demand counts under now (its fact's, as the figures read it)."""
    from services.metrics.db.tables import DemandFactRow
    from shared.database.engine import create_engine, session_factory

    engine = create_engine(site.settings.database_url)
    try:
        async with session_factory(engine)() as session:
            fact = await session.get(DemandFactRow, (source, demand_id))
    finally:
        await engine.dispose()
    assert fact is not None
    return fact.purpose


def _other_than(purpose: str) -> str:
    return "billing" if purpose != "billing" else "report a repair"


async def _not_a_demand(
    client: httpx.AsyncClient, site: Site, queue: str, token: str, purpose: str
) -> tuple[str, DemandLabelled]:
    """Answer the queue's first item 'not a demand' with ``purpose`` chosen before N (as the
    form still sends the select); the label published."""
    page = (await client.get(f"/pages/{queue}")).text
    demand_id = _current(page)
    form = {"csrf_token": token, "demand_id": demand_id, "decision": _field(page, "decision"),
            "demand_source": _field(page, "demand_source"), "demand_type": "none",
            "purpose": purpose}  # fmt: skip
    assert (await client.post(f"/pages/{queue}/decide", data=form)).status_code == 303
    (label,) = [x for x in await _labels(site) if x.demand_id == demand_id]
    assert (label.not_a_demand, label.reason) == (True, queue)
    return demand_id, label


async def test_not_a_demand_in_review_keeps_the_counted_purpose_not_the_one_chosen(
    client: httpx.AsyncClient, site: Site
) -> None:
    """Issue 11 (review M1): a reviewer who moved the select and then pressed N does not
    move the contact's volume: the label carries the purpose it counts under."""
    await _ready(client)
    token = await sign_in(client, "rey")
    page = (await client.get("/pages/review")).text
    counted = await _counted(site, _field(page, "demand_source"), _current(page))

    _id, label = await _not_a_demand(client, site, "review", token, _other_than(counted))

    assert label.purpose == counted


async def test_not_a_demand_in_the_audit_keeps_the_counted_purpose_not_the_one_chosen(
    client: httpx.AsyncClient, site: Site
) -> None:
    await _ready(client)
    token = await sign_in(client, "ada")
    page = (await client.get("/pages/audit")).text
    counted = await _counted(site, _field(page, "demand_source"), _current(page))

    _id, label = await _not_a_demand(client, site, "audit", token, _other_than(counted))

    assert label.purpose == counted


async def test_not_a_demand_in_the_audit_keeps_a_persons_earlier_move(
    client: httpx.AsyncClient, site: Site
) -> None:
    """A correction moved the audit item to another purpose before the auditor answered:
    the audit's 'not a demand' keeps it there, not at the machine's first purpose."""
    from datetime import UTC, datetime

    from services.metrics.db.queues import audit_machine_label
    from services.metrics.ingest import apply_events
    from shared.database.engine import create_engine, session_factory
    from tests.support.factories import demand_labelled

    await _ready(client)
    token = await sign_in(client, "ada")
    page = (await client.get("/pages/audit")).text
    source, demand_id = _field(page, "demand_source"), _current(page)
    engine = create_engine(site.settings.database_url)
    try:
        async with session_factory(engine).begin() as session:
            machine = await audit_machine_label(session, source, demand_id)
            assert machine is not None
            moved = _other_than(machine[0])
            correction = demand_labelled(
                demand_id=demand_id, demand_source=source, purpose=moved,
                reason="correction", labelled_at=datetime.now(UTC),
            )  # fmt: skip
            await apply_events(session, [correction])
    finally:
        await engine.dispose()
    assert await _counted(site, source, demand_id) == moved  # the correction applied

    _id, label = await _not_a_demand(client, site, "audit", token, purpose="")

    assert label.demand_id == demand_id
    assert label.purpose == moved
