"""A SQLite file's write-ahead log checkpointed in the background, off the commit path.

In WAL mode a commit appends to the log; once the log holds ``wal_autocheckpoint`` pages
(1,000 by default) the commit that crosses it also copies the log into the database, with
an fsync of the log before and of the database after (synchronous=NORMAL). That commit
then takes tens of ms of wall clock, on the writer's thread, while its batch waits.
``WalCheckpointer`` runs a PASSIVE checkpoint on a connection of its own, on a worker
thread, whenever the log has grown: it copies what no reader still needs, never waits for
the writer or a reader, and takes no lock a commit waits for. Commits keep
synchronous=NORMAL's meaning: durable against a crash of the process (the log is in the
file), not against a power cut between checkpoints, as before. The engine's own
autocheckpoint stays, raised (create_engine's ``wal_autocheckpoint``), as the backstop
should this task stop. A round that fails (a disk or permissions error, a database locked
while it is recovered) is logged, counted and tried again next round: the task never stops
for it, nor makes its service unready, since the backstop covers for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import make_url

from shared.service.supervisor import BackgroundTask

log = logging.getLogger(__name__)

# The engine's backstop when a WalCheckpointer runs: four times the time between two of
# its rounds at the metrics write path's pace (~1,000 pages every two or three batches).
BACKSTOP_PAGES = 10_000
# A round even when the log looks unchanged, this long after the last: a filesystem whose
# modification times are coarse (1-2 s) can hide a write in the same tick as the last look.
FORCED_ROUND_S = 5.0
# A failing round is logged at most this often (each failure is counted).
FAILURE_LOG_INTERVAL_S = 60.0


def sqlite_file(database_url: str) -> Path | None:
    """The SQLite file of ``database_url``; None for another database, one in memory, or a
    URI-style one (``file:...?uri=true``, whose path this does not resolve): no checkpointer
    and no raised backstop for those."""
    url = make_url(database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or "uri" in url.query:
        return None
    return Path(database)


class WalCheckpointer:
    def __init__(
        self,
        path: Path,
        *,
        interval_s: float = 0.25,
        on_failure: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._interval_s = interval_s
        self._on_failure = on_failure  # e.g. a Prometheus counter's inc
        self._clock = clock
        self._seen: tuple[int, int] | None = None  # the log's size and time, last round
        self._last_round = clock()
        self.failures = 0  # rounds that failed, since the start
        self._failures_logged = 0
        self._logged_at: float | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.checkpoint_once()
            except (sqlite3.Error, OSError) as error:
                self._failed(error)
            await asyncio.sleep(self._interval_s)

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        if self._on_failure is not None:
            self._on_failure()
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= FAILURE_LOG_INTERVAL_S:
            log.warning(
                "checkpoint of %s failed (%s failures, %s since the last warning): %r; "
                "the engine's autocheckpoint stays as the backstop",
                self._path,
                self.failures,
                self.failures - self._failures_logged,
                error,
            )
            self._logged_at = now
            self._failures_logged = self.failures

    async def checkpoint_once(self) -> bool:
        """A PASSIVE checkpoint if anything was written to the log since the last round, or
        the last round is FORCED_ROUND_S old; whether one ran. (The log is not truncated:
        the writer starts it again from the top once every frame is in the database, so its
        size alone says nothing.) A failure raises (sqlite3.Error, OSError)."""
        try:
            stat = os.stat(self._wal)
        except FileNotFoundError:
            return False
        seen = (stat.st_size, stat.st_mtime_ns)
        now = self._clock()
        if seen == self._seen and now - self._last_round < FORCED_ROUND_S:
            return False
        await asyncio.to_thread(self._checkpoint)
        self._seen = seen
        self._last_round = now
        return True

    def _checkpoint(self) -> None:
        # A connection of its own each round, opened and closed on the worker thread: a
        # round whose task is cancelled (the service stopping) runs on to its end on that
        # thread, and a connection kept across rounds would be closed under it (a crash in
        # sqlite3). Opening one costs ~0.1 ms, a few times a second.
        # mode=rw: a missing database is an error, never created empty (a stray log beside
        # it would then be replayed into the new file).
        connection = sqlite3.connect(
            f"file:{quote(str(self._path))}?mode=rw", uri=True, isolation_level=None
        )
        try:
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            connection.close()
        log.debug("checkpointed %s: %s of %s frames (busy %s)", self._path, copied, frames, busy)


@dataclass(frozen=True)
class BackgroundCheckpoint:
    """What a service needs to checkpoint its database's log in the background: the
    autocheckpoint its connections take (``BACKSTOP_PAGES``, or None: SQLite's default),
    and its tasks (none unless the database is a SQLite file)."""

    wal_autocheckpoint: int | None = None
    tasks: list[BackgroundTask] = field(default_factory=list)


def background_checkpoint(
    database_url: str, *, on_failure: Callable[[], None] | None = None
) -> BackgroundCheckpoint:
    """The background checkpoint of ``database_url``'s SQLite file, if it is one."""
    path = sqlite_file(database_url)
    if path is None:
        return BackgroundCheckpoint()
    task = BackgroundTask("wal-checkpoint", WalCheckpointer(path, on_failure=on_failure).run)
    return BackgroundCheckpoint(BACKSTOP_PAGES, [task])
