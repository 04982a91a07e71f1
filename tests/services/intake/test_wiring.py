"""Intake on the service skeleton: building the app opens nothing, running it changes nothing
process-wide, a background task that dies is logged, shown by /readyz and restarted, and a
SQLite ledger's log is checkpointed by a task of its own rather than by the commits."""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url

from services.intake.config import IntakeSettings
from services.intake.db import repository
from services.intake.main import create_app
from shared.database import checkpoint
from shared.database.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from shared.service.collector import YOUNG_COLLECTION_AFTER
from tests.support.apps import running
from tests.support.factories import demand_body
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]

# Runs in a fresh interpreter: the modules are imported first (reading their files is
# fine), then every open, directory, database and socket is recorded while the app is
# built and its OpenAPI document rendered.
_PROBE = textwrap.dedent(
    """
    import json, sys
    import services.intake.main as main
    watched = {"open", "os.mkdir", "os.rename", "os.remove", "sqlite3.connect",
               "socket.connect", "socket.bind", "subprocess.Popen"}
    seen = []
    sys.addaudithook(lambda event, args: seen.append([event, repr(args)[:200]])
                     if event in watched else None)
    app = main.create_app()
    app.openapi()
    print(json.dumps(seen))
    """
)


def test_create_app_opens_nothing(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEMANDSCOPE_")}
    env["PYTHONPATH"] = str(ROOT)
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,  # the default database URLs point at .run/ under the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(probe.stdout) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
async def test_running_intake_leaves_the_interpreter_as_it_was(
    intake_settings: IntakeSettings,
) -> None:
    before = sys.getswitchinterval()
    threshold = gc.get_threshold()
    async with running(create_app(intake_settings)) as client:
        await wait_until(lambda: _status(client, "/readyz"), accept=lambda s: s == 200)
        # While it serves, young objects are collected less often (shared.service.collector).
        assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, *threshold[1:])
    assert sys.getswitchinterval() == before
    assert gc.get_threshold() == threshold


@pytest.mark.integration
async def test_a_ledger_writer_that_dies_is_logged_not_ready_and_restarted(
    intake: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The fixture's ledger is on SQLite: the writer runs apply_burst_sqlite on its thread.
    real_apply = repository.apply_burst_sqlite
    calls = 0

    def apply_once_broken(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the ledger writer")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(repository, "apply_burst_sqlite", apply_once_broken)
    body = demand_body()
    refused = await intake.post("/v1/demands", json=body)
    # Its caller is answered (503, retry), not left waiting for a writer that is gone.
    assert refused.status_code == 503, refused.text
    assert refused.json()["title"] == "Idempotency ledger unavailable"

    async def death_logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "ledger-writer" in r.getMessage()]

    [died, *_] = await wait_until(death_logged, what="the writer's death logged", timeout=10)
    assert died.levelno == logging.ERROR
    assert died.exc_info is not None  # with its traceback

    # Restarted by the supervisor (after a back-off during which /readyz says 503).
    await wait_until(lambda: _status(intake, "/readyz"), accept=lambda s: s == 200, timeout=10)
    retried = await intake.post("/v1/demands", json=body)
    assert retried.status_code == 202, retried.text
    metrics = (await intake.get("/metrics")).text
    assert 'demandscope_background_task_failures_total{task="ledger-writer"} 1.0' in metrics


@pytest.mark.integration
async def test_a_sqlite_ledger_is_checkpointed_in_the_background_not_by_its_commits(
    intake_settings: IntakeSettings, demo_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the ledger writer's connection (on its own thread) says when it is opened.
    autocheckpoints: list[int] = []
    real_connect = repository.connect_sqlite

    def connect_and_look(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = real_connect(*args, **kwargs)
        autocheckpoints.append(connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        return connection

    # The rounds of the service's checkpointer, and the file each was for.
    rounds: list[tuple[Path, bool]] = []

    class Watched(WalCheckpointer):
        def __init__(self, path: Path, **kwargs: Any) -> None:
            super().__init__(path, **kwargs)
            self.watched_path = path

        async def checkpoint_once(self) -> bool:
            ran = await super().checkpoint_once()
            rounds.append((self.watched_path, ran))
            return ran

    monkeypatch.setattr(repository, "connect_sqlite", connect_and_look)
    monkeypatch.setattr(checkpoint, "WalCheckpointer", Watched)
    ledger_file = Path(str(make_url(intake_settings.database_url).database))
    app = create_app(intake_settings)
    async with running(app) as client:
        client.headers["Authorization"] = f"Bearer {demo_key}"
        await wait_until(lambda: _status(client, "/readyz"), accept=lambda s: s == 200)
        tasks = (await client.get("/readyz")).json()["tasks"]
        assert tasks["wal-checkpoint"] == "running"
        accepted = await client.post("/v1/demands", json=demand_body())
        assert accepted.status_code == 202, accepted.text

        # Both ways into the ledger leave the log to the task, with the backstop raised.
        assert autocheckpoints == [BACKSTOP_PAGES]
        async with app.state.components.ledger_engine.connect() as connection:
            engine_pages = await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")
            assert engine_pages.scalar_one() == BACKSTOP_PAGES

        async def ran_on_the_ledger() -> list[tuple[Path, bool]]:
            return [(path, ran) for path, ran in rounds if ran]

        [(path, _), *_] = await wait_until(ran_on_the_ledger, what="a checkpoint round")
        assert path == ledger_file
        metrics = (await client.get("/metrics")).text
        assert "demandscope_intake_wal_checkpoint_failures_total 0.0" in metrics


async def _status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path)).status_code
