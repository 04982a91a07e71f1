"""A value the database refuses is the record's fault; anything else is an outage."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from shared.database.errors import refused_by_the_database


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "records_fault"),
    [
        (DBAPIError("insert", {}, _DriverError("22021")), True),  # a NUL in text (PostgreSQL)
        (DBAPIError("insert", {}, _DriverError("22001")), True),  # value too long (asyncpg)
        (DBAPIError("insert", {}, _DriverError("23505")), True),  # unique violation
        (DataError("insert", {}, _DriverError(None)), True),
        (DBAPIError("select 1", {}, _DriverError("08006")), False),  # connection failure
        (DBAPIError("select 1", {}, _DriverError("42P01")), False),  # not migrated yet
        (OperationalError("select 1", {}, _DriverError(None)), False),
        (DBAPIError("select 1", {}, _DriverError(None)), False),  # SQLite "database is locked"
    ],
)
def test_what_the_database_refuses_is_not_retried_as_an_outage(
    error: DBAPIError, records_fault: bool
) -> None:
    # Retried as an outage, a record the database refuses stalls its partition for ever;
    # refused, the runner isolates it and dead-letters it with the database's reason.
    assert refused_by_the_database(error) is records_fault
