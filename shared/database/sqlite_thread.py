"""One function on aiosqlite's own thread, in the connection's transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


async def on_sqlite_thread(
    connection: AsyncConnection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """``work`` on the connection's sqlite3 connection, in its transaction, on aiosqlite's
    thread: one hop for all its statements, not one per statement. sqlite3's errors come out
    as SQLAlchemy's (DBAPIError and its kinds), as every other statement's do, for the caller
    to judge."""
    driver: Any = (await connection.get_raw_connection()).driver_connection

    def on_thread() -> T:
        try:
            return work(driver._conn)
        except sqlite3.Error as error:
            raise DBAPIError.instance(
                None, None, error, sqlite3.Error, dialect=connection.dialect
            ) from error

    result: T = await driver._execute(on_thread)
    return result
