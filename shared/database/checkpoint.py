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
should this task stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path

from sqlalchemy import make_url

log = logging.getLogger(__name__)

# The engine's backstop when a WalCheckpointer runs: four times the time between two of
# its rounds at the metrics write path's pace (~1,000 pages every two or three batches).
BACKSTOP_PAGES = 10_000


def sqlite_file(database_url: str) -> Path | None:
    """The SQLite file of ``database_url``; None for another database or one in memory."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


class WalCheckpointer:
    def __init__(self, path: Path, *, interval_s: float = 0.25) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._interval_s = interval_s
        self._seen: tuple[int, int] | None = None  # the log's size and time, last round

    async def run(self) -> None:
        while True:
            await self.checkpoint_once()
            await asyncio.sleep(self._interval_s)

    async def checkpoint_once(self) -> bool:
        """A PASSIVE checkpoint if anything was written to the log since the last round;
        whether one ran. (The log is not truncated: the writer starts it again from the top
        once every frame is in the database, so its size alone says nothing.)"""
        try:
            stat = os.stat(self._wal)
        except FileNotFoundError:
            return False
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self._seen:
            return False
        await asyncio.to_thread(self._checkpoint)
        self._seen = seen
        return True

    def _checkpoint(self) -> None:
        # A connection of its own each round, opened and closed on the worker thread: a
        # round whose task is cancelled (the service stopping) runs on to its end on that
        # thread, and a connection kept across rounds would be closed under it (a crash in
        # sqlite3). Opening one costs ~0.1 ms, a few times a second.
        connection = sqlite3.connect(self._path, isolation_level=None)
        try:
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            connection.close()
        log.debug("checkpointed %s: %s of %s frames (busy %s)", self._path, copied, frames, busy)
