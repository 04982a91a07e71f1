"""The label store's tables. Queries live in ``repository.py``, nowhere else."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.database.naming import named_metadata


class ClassifierBase(DeclarativeBase):
    metadata = named_metadata()


class LabelRow(ClassifierBase):
    """A person's label, kept once per label id; the latest label of a demand wins."""

    __tablename__ = "classifier_labels"

    # Arrival order: breaks ties between two labels of one demand made at the same moment.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label_id: Mapped[str] = mapped_column(String(200), unique=True)
    demand_id: Mapped[str] = mapped_column(String(200))
    demand_type: Mapped[str] = mapped_column(String(16))
    failure_kind: Mapped[str | None] = mapped_column(String(120))
    purpose: Mapped[str] = mapped_column(String(120))
    labelled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    labelled_by: Mapped[str] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_classifier_labels_demand", "demand_id", "labelled_at"),)


class DemandTextRow(ClassifierBase):
    """A demand's text as the classifier saw it, kept for the context window so that a label
    arriving without the text can still teach the model."""

    __tablename__ = "classifier_demand_texts"

    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
