"""Which database errors are the record's fault and which are the database's."""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError


def refused_by_the_database(error: DBAPIError) -> bool:
    """The values, not the connection: a data exception or a constraint (SQLSTATE class 22
    or 23; asyncpg's arrive as a plain DBAPIError carrying the SQLSTATE). Retrying those
    would stall a partition for ever, so a consumer dead-letters the record instead; any
    other database error is an outage, retried."""
    if isinstance(error, DataError | IntegrityError):
        return True
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    return sqlstate[:2] in ("22", "23")
