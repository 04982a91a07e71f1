"""One constraint-naming convention for every database, so Alembic migrations name indexes
and keys the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def named_metadata() -> MetaData:
    """Fresh metadata for one database's declarative base, with the shared convention."""
    return MetaData(naming_convention=NAMING_CONVENTION)
