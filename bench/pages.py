"""The pages against the JSON API behind them, on one database of a million demands.

Each page is timed as a person's browser asks for it (signed in, over HTTP, in process) and
set against the JSON API calls that produce its figures for the same filter, timed the same
way with an API key: a page costs its API calls plus rendering, so the ratio shows what the
pages add, and the absolute time what is left to make fast (issue 12 asks for 100 ms).

Run: `.venv/bin/python -m bench pages`. Starts its own broker (the app's consumer needs one)
on free ports under .run/bench-pages. DEMANDSCOPE_BENCH_PAGES_DEMANDS sets the size
(default 1 000 000); rows go straight into the tables, as in bench/metrics.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx

from bench import results
from bench.metrics import PURPOSES, ROOT, T0, _sqlite_time, fill_database
from devstack import kafka as local_kafka
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade
from services.metrics.main import create_app
from services.metrics.pages.settings import PagesSettings
from shared.auth.account_store import AccountStore
from shared.auth.accounts import Role
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.kafka.admin import ensure_topics
from shared.kafka.settings import KafkaSettings
from shared.topics import topic_specs
from tests.support.apps import running

DEMANDS = int(os.environ.get("DEMANDSCOPE_BENCH_PAGES_DEMANDS", "1000000"))
ROUNDS = 5
PAGE_TARGET_S = 0.1
PASSWORD = "bench passphrase"
PERIOD = "2026-01-05/P28D"  # four weeks of the data: what a person usually looks at

# page -> the JSON API calls behind its figures
PAGES: dict[str, tuple[str, list[str]]] = {
    "overview": (
        f"/pages/overview?period={PERIOD}",
        [
            f"/v1/demand/overall?period={PERIOD}",
            f"/v1/purposes?period={PERIOD}",
            f"/v1/demand/by-channel?period={PERIOD}",
            f"/v1/demand/over-time?period={PERIOD}",
            f"/v1/demand/capacity?period={PERIOD}",
        ],
    ),
    "purpose": (
        f"/pages/purposes/{quote(PURPOSES[0])}?period={PERIOD}",
        [
            f"/v1/purposes/{quote(PURPOSES[0])}?period={PERIOD}",
            f"/v1/demand/purpose-over-time?purpose={quote(PURPOSES[0])}&period={PERIOD}",
        ],
    ),
    "failure flow": (
        f"/pages/failure-flow?period={PERIOD}",
        [f"/v1/demand/failure-flow?period={PERIOD}"],
    ),
    "changes": ("/pages/changes", [f"/v1/purposes/{quote(p)}/changes" for p in PURPOSES]),
}


def fill_demands(path: Path, count: int) -> None:
    """The received demands behind bench/metrics.py's facts (the capacity figure and the
    audit's estimate read them): every other one a phone call with its handling time."""
    rows = []
    for i in range(count):
        at = T0 + timedelta(seconds=i * 7)
        day = at.date()
        week = day - timedelta(days=day.weekday())
        rows.append(
            (f"d{i}", f"C{i}", f"K{i}", "phone" if i % 2 else "email", "bench", "north",
             _sqlite_time(at), _sqlite_time(at), PURPOSES[i % len(PURPOSES)],
             "failure" if i % 2 else "value", "repeat" if i % 2 else None, 0.9, "model", "b-1",
             None, None, _sqlite_time(at), 0, date.isoformat(week),
             float(300 + i % 600) if i % 4 == 1 else None)
        )  # fmt: skip
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA synchronous=OFF")
        connection.executemany(
            "INSERT INTO demands (demand_id, customer_ref, case_ref, channel, source, team, "
            "occurred_at, received_at, purpose, demand_type, failure_kind, confidence, method, "
            "model_version, caused_by_kind, caused_by_ref, classified_at, needs_review, "
            "week_start, handling_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


async def _people(auth_url: str) -> str:
    accounts, keys = AccountStore(auth_url), ApiKeyStore(auth_url)
    try:
        await accounts.create("bench", Role.VIEWER, PASSWORD)
        key, _ = await keys.create("bench", [Scope.READ])
    finally:
        await accounts.close()
        await keys.close()
    return key


async def _median(call: Callable[[], Awaitable[httpx.Response]]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        answer = await call()
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:300]
    return statistics.median(times)


async def measure(workdir: Path, kafka: KafkaSettings) -> None:
    metrics_db, auth_url = workdir / "metrics.db", f"sqlite+aiosqlite:///{workdir / 'auth.db'}"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{metrics_db}")
    await asyncio.to_thread(upgrade_auth, auth_url)
    started = time.perf_counter()
    await asyncio.to_thread(fill_database, metrics_db, DEMANDS)
    await asyncio.to_thread(fill_demands, metrics_db, DEMANDS)
    print(f"  {DEMANDS:,} demands and cases generated in {time.perf_counter() - started:.0f}s")
    key = await _people(auth_url)
    settings = MetricsSettings(
        kafka=kafka, database_url=f"sqlite+aiosqlite:///{metrics_db}", group_id="bench-pages",
        auth=AuthSettings(database_url=auth_url),
        pages=PagesSettings(assets_dir=ROOT / ".run" / "assets"),
    )  # fmt: skip
    async with running(create_app(settings)) as client:
        form = await client.get("/pages/sign-in")
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        await client.post(
            "/pages/sign-in",
            data={"username": "bench", "password": PASSWORD, "csrf_token": token},
        )
        headers = {"Authorization": f"Bearer {key}"}
        print(f"  median of {ROUNDS}, period {PERIOD}, SQLite:")
        print(f"  {'page':<13} {'HTML':>9} {'its API calls':>14} {'ratio':>6}")
        timed: dict[str, tuple[float, float]] = {}
        for name, (page, calls) in PAGES.items():
            html = await _median(lambda page=page: client.get(page))  # type: ignore[misc]
            each = {
                call: await _median(
                    lambda call=call: client.get(call, headers=headers)  # type: ignore[misc]
                )
                for call in calls
            }
            api = sum(each.values())
            print(f"  {name:<13} {html * 1000:>7.0f}ms {api * 1000:>12.0f}ms {html / api:>6.2f}")
            for call, seconds in each.items():
                print(f"    {seconds * 1000:>7.0f}ms  GET {call}")
            timed[name] = (html, api)
    record(timed)


def record(timed: dict[str, tuple[float, float]]) -> None:
    """One row: the slowest page, against the API calls behind its figures."""
    name, (html, api) = max(timed.items(), key=lambda item: item[1][0])
    reduced = "" if DEMANDS >= 1_000_000 else f"; REDUCED SIZE ({DEMANDS:,} demands)"
    results.record(
        results.Row(
            part=f"slowest page, {DEMANDS:,} demands ({name})",
            figure=f"{html * 1000:,.0f} ms",
            baseline=f"its JSON API calls: {api * 1000:,.0f} ms",
            ratio=results.ratio(html, api),
            target=f"≤ {PAGE_TARGET_S * 1000:.0f} ms (issue 12)",
            met=html <= PAGE_TARGET_S,
            note="every page: "
            + ", ".join(f"{n} {h * 1000:,.0f} ms" for n, (h, _) in timed.items())
            + f"; median of {ROUNDS}, period {PERIOD}, SQLite{reduced}",
        )
    )


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-pages-", dir=ROOT / ".run"))
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(
        root=ROOT, run_dir=ROOT / ".run" / "bench-pages"
    )
    local_kafka.stop(cfg)
    local_kafka.wipe(cfg)
    local_kafka.start(cfg, timeout=120)
    try:
        kafka = KafkaSettings(bootstrap_servers=cfg.bootstrap, topic_prefix="bench.", partitions=1)
        asyncio.run(ensure_topics(kafka, topic_specs(kafka)))
        asyncio.run(measure(workdir, kafka))
    finally:
        local_kafka.stop(cfg)
        shutil.rmtree(workdir, ignore_errors=True)
