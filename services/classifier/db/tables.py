"""The label store's tables. Queries live in ``repository.py``, nowhere else."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.database.naming import named_metadata


class ClassifierBase(DeclarativeBase):
    metadata = named_metadata()


class LabelRow(ClassifierBase):
    """A person's label, kept once per (demand source, label id); the latest label of a
    demand, (source, id), wins. A label written before labels named the demand's source is
    kept with the empty source: it teaches with the text of the one demand of its id."""

    __tablename__ = "classifier_labels"

    # Arrival order: breaks ties between two labels of one demand made at the same moment.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    demand_source: Mapped[str] = mapped_column(String(200), server_default=text("''"))
    label_id: Mapped[str] = mapped_column(String(200))
    demand_id: Mapped[str] = mapped_column(String(200))
    demand_type: Mapped[str] = mapped_column(String(16))
    failure_kind: Mapped[str | None] = mapped_column(String(120))
    purpose: Mapped[str] = mapped_column(String(120))
    labelled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    labelled_by: Mapped[str] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text)
    # DemandLabelled.reason ("review", "audit", "correction"): which labels came from the
    # blind audit cannot be told afterwards, so it is kept. NULL: stored before it was kept.
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # DemandLabelled.not_a_demand: such a label teaches neither a type nor a purpose.
    not_a_demand: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (
        UniqueConstraint("demand_source", "label_id"),
        Index("ix_classifier_labels_demand", "demand_id", "demand_source", "labelled_at"),
    )


class DemandTextRow(ClassifierBase):
    """A demand's text as the classifier saw it, kept for the context window so that a label
    arriving without the text can still teach the model. Keyed by the demand: (source, id)."""

    __tablename__ = "classifier_demand_texts"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    demand_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Whose context the demand is in: a label read elsewhere is forwarded to its owner.
    customer_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
