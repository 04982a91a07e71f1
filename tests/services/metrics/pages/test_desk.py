"""A person's last decisions and skips in the queues are in the metrics database: another
replica on the same database (or this one restarted: a new app has nothing in memory)
lists the same last ten, can undo them, and moves past the same demands."""

from __future__ import annotations

import re

import pytest

from services.metrics.main import create_app
from tests.support.apps import running

from .conftest import Site, sign_in
from .queues_seed import keep_queue_words

pytestmark = pytest.mark.integration


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, name
    return found.group(1)


def _current(html: str) -> str:
    found = re.search(r'data-demand-id="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _source(html: str) -> str:
    return _field(html, "demand_source")


async def test_another_replica_knows_a_persons_decisions_and_skips(site: Site) -> None:
    assert await keep_queue_words(site.settings.database_url) > 0
    async with running(create_app(site.settings)) as first:
        token = await sign_in(first, "rey")
        page = (await first.get("/pages/review")).text
        decided = _current(page)
        form = {"csrf_token": token, "demand_id": decided, "decision": _field(page, "decision"),
                "demand_type": "failure", "failure_kind": "progress_chasing",
                "purpose": "report a repair", "demand_source": _source(page)}  # fmt: skip
        assert (await first.post("/pages/review/decide", data=form)).status_code == 303
        page = (await first.get("/pages/review")).text
        skipped = _current(page)
        assert skipped != decided
        skip = {"csrf_token": token, "demand_id": skipped, "demand_source": _source(page)}
        assert (await first.post("/pages/review/skip", data=skip)).status_code == 303
        labels = re.findall(r'data-label="([^"]+)"', (await first.get("/pages/review")).text)
        assert len(labels) == 1

    # A second app on the same database: nothing of the first one's memory.
    async with running(create_app(site.settings)) as second:
        token = await sign_in(second, "rey")
        page = (await second.get("/pages/review")).text
        assert re.findall(r'data-label="([^"]+)"', page) == labels  # the same last ten
        assert _current(page) not in (decided, skipped)
        undo = await second.post("/pages/review/undo", data={"csrf_token": token})
        assert undo.status_code == 303
        assert _current((await second.get("/pages/review")).text) == decided  # in front again

    # Another person's desk is their own.
    async with running(create_app(site.settings)) as third:
        await sign_in(third, "ada")
        page = (await third.get("/pages/review")).text
        assert 'data-label="' not in page
