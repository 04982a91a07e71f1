"""The tables every classifier instance shares its model through: the stored versions, the
one current pointer, and the training lease. Queries live in ``model_versions.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from services.classifier.db.tables import ClassifierBase

CURRENT_ROW = 1


class ModelVersionRow(ClassifierBase):
    """One trained model: its pickle (joblib) and what it was trained on. Never changed once
    written; a rollback moves the current pointer, not the rows."""

    __tablename__ = "classifier_model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of ``model``
    model_format: Mapped[int] = mapped_column(Integer)
    # "metadata" is taken on a declarative class, so the attribute has another name.
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    model: Mapped[bytes] = mapped_column(LargeBinary)


class CurrentModelRow(ClassifierBase):
    """The version every instance classifies with: one row (id 1), so "current" has one
    answer for the whole fleet."""

    __tablename__ = "classifier_model_current"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[str] = mapped_column(
        String(64), ForeignKey("classifier_model_versions.version")
    )
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changed_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(200))

    __table_args__ = (CheckConstraint(f"id = {CURRENT_ROW}", name="one_row"),)


class LeaseRow(ClassifierBase):
    """A lease one holder has until ``expires_at`` (renewed while it works): "retrain" makes
    one trainer at a time across the fleet; a crashed holder's lease simply expires."""

    __tablename__ = "classifier_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
