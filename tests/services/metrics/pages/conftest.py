"""Fixtures of the pages' tests: a metrics database seeded with the demo data set, an auth
database with an account per role and a read key, the app in-process (HTTP tests) or on a
real port (browser tests), and a session-scoped Chromium (Debian's, never a download)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
import uvicorn

from devstack.demo import change_events, demo_events
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.ingest import apply_events
from services.metrics.main import create_app
from services.metrics.pages.settings import PagesSettings
from shared.auth.account_store import AccountStore
from shared.auth.accounts import Role
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings, PeopleSettings
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine, session_factory
from shared.kafka.settings import KafkaSettings
from tests.support.apps import running

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[4]
ASSETS = ROOT / ".run" / "assets"
PASSWORD = "a long enough passphrase"
ACCOUNTS = {"ada": Role.ADMIN, "rey": Role.REVIEWER, "vic": Role.VIEWER}
# Demo data ends yesterday; a fixed "now" keeps every run's figures the same.
NOW = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: a fixture may be set up while an event loop runs
    in the main thread, where asyncio.run would refuse to start another."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Site:
    settings: MetricsSettings
    read_key: str

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_key}"}


async def _seed(directory: Path, *, purpose_changes: bool = True) -> tuple[str, str, str]:
    metrics_url = f"sqlite+aiosqlite:///{directory / 'metrics.db'}"
    auth_url = f"sqlite+aiosqlite:///{directory / 'auth.db'}"
    await asyncio.to_thread(upgrade, metrics_url)
    await asyncio.to_thread(upgrade_auth, auth_url)
    events, changes = demo_events(NOW)
    if purpose_changes:  # as the consumer stores them from system.changes
        events += change_events(changes)
    engine = create_engine(metrics_url)
    try:
        async with session_factory(engine).begin() as session:
            await apply_events(session, events)
    finally:
        await engine.dispose()
    accounts = AccountStore(auth_url)
    keys = ApiKeyStore(auth_url)
    try:
        for username, role in ACCOUNTS.items():
            await accounts.create(username, role, PASSWORD)
        # A dashboard reads the whole organisation, as the pages do (sources:all).
        read_key, _ = await keys.create("dashboard", [Scope.READ, Scope.SOURCES_ALL])
    finally:
        await accounts.close()
        await keys.close()
    return metrics_url, auth_url, read_key


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo data set, migrated and applied once per session: tests copy the files."""
    directory = tmp_path_factory.mktemp("pages-seed")
    _m, _a, read_key = _run(_seed(directory))
    return directory, read_key


def _site(
    template: tuple[Path, str], target: Path, kafka: KafkaSettings, group: str, **people: Any
) -> Site:
    directory, read_key = template
    for name in ("metrics.db", "auth.db"):
        shutil.copy(directory / name, target / name)
    settings = MetricsSettings(
        kafka=kafka,
        database_url=f"sqlite+aiosqlite:///{target / 'metrics.db'}",
        group_id=group,
        auth=AuthSettings(database_url=f"sqlite+aiosqlite:///{target / 'auth.db'}"),
        people=PeopleSettings(**people),
        pages=PagesSettings(assets_dir=ASSETS),
        # The pages read a seeded database and publish single labels (polls of one batch,
        # decoded in the service anyway): no decoding worker, whose start and stop (its
        # imports) cost ~1 s of every app the pages' tests start.
        decode_worker=False,
    )
    return Site(settings, read_key)


@pytest.fixture
def site(
    seeded_template: tuple[Path, str], tmp_path: Path, kafka_settings: KafkaSettings,
    unique_group: str,
) -> Site:  # fmt: skip
    return _site(seeded_template, tmp_path, kafka_settings, unique_group)


@pytest.fixture
async def client(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(site.settings)) as http:
        yield http


async def sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form, as a browser does; the session's CSRF token."""
    form = await client.get("/pages/sign-in")
    token = _csrf_of(form.text)
    answer = await client.post(
        "/pages/sign-in",
        data={"username": username, "password": password, "csrf_token": token},
    )
    assert answer.status_code == 303, answer.text
    page = await client.get("/pages/overview")
    assert page.status_code == 200
    return _csrf_of(page.text)


def _csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


# --- a real server and a browser ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LiveSite:
    url: str
    site: Site


@pytest.fixture(scope="module")
def live_site(
    seeded_template: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
) -> Iterator[LiveSite]:
    """The metrics app on a real port of 127.0.0.1, in a thread with its own event loop."""
    from shared.kafka.admin import ensure_topics
    from shared.topics import topic_specs

    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"pages{os.getpid()}.", partitions=1
    )
    _run(ensure_topics(kafka, topic_specs(kafka)))
    site = _site(seeded_template, tmp_path_factory.mktemp("live"), kafka, f"pages-{os.getpid()}")
    port = _free_port()
    config = uvicorn.Config(
        create_app(site.settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the metrics app did not start")
        time.sleep(0.05)
    try:
        yield LiveSite(f"http://127.0.0.1:{port}", site)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


CHROMIUM = Path("/usr/bin/chromium")


def _browser_missing() -> list[str]:
    missing = []
    if not CHROMIUM.is_file():
        missing.append("Debian's chromium (`make setup` installs it)")
    if not (ASSETS / "axe.min.js").is_file():
        missing.append(f"the vendored libraries in {ASSETS} (`make install` fetches them)")
    return missing


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright's async API on the session's event loop (never
    `playwright install`). Missing: the browser tests are skipped loudly, or fail under
    CI=true (like PostgreSQL's). Async, not the sync API: that one keeps an event loop
    running in the main thread for as long as the browser lives, which every later async
    test of the session would trip over."""
    missing = _browser_missing()
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - a dev dependency
        missing.append("the playwright package (`make install`)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()
