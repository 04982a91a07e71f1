"""Typed SQLAlchemy 2 tables. Queries live in the repository, nowhere else."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so Alembic migrations are stable across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Demand(Base):
    """One classified demand. The primary key is the sender's event id: idempotency."""

    __tablename__ = "demands"

    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(200))
    case_ref: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))
    team: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    purpose: Mapped[str] = mapped_column(String(120))
    demand_type: Mapped[str] = mapped_column(String(16))
    failure_kind: Mapped[str | None] = mapped_column(String(120))
    confidence: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(100))
    caused_by_kind: Mapped[str | None] = mapped_column(String(16))
    caused_by_ref: Mapped[str | None] = mapped_column(String(200))
    classified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_demands_purpose_type", "purpose", "demand_type"),
        Index("ix_demands_customer", "customer_ref", "occurred_at"),
    )
