"""Labelled examples, and reading them from the CSV files people actually produce.

Real exports are untidy: a byte-order mark, headers in other casing or spacing ("Demand Type"),
extra columns, "Value", "FAILURE" or "failure demand", empty failure kinds, blank rows. Reading
is lenient and counts what it had to skip.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from shared.events.classification import DemandType

_LABELLED_TYPES = {DemandType.VALUE.value, DemandType.FAILURE.value}

AUDIT = "audit"
"""``DemandLabelled.reason`` of a label from the blind audit: random, but drawn per (purpose,
week) with unequal chances, so the audit labels' raw share is not the organisation's."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    purpose: str | None
    demand_type: str | None
    failure_kind: str | None = None
    channel: str | None = None
    sector: str | None = None
    """Only in the general corpus: the kind of organisation the row was written for."""
    reason: str | None = None
    """Only on people's labels (``DemandLabelled.reason``): "audit" when the demand was drawn
    into the blind audit (even if a later label corrected it: the demand is still part of the
    sample), else the latest label's reason; None for file rows and for labels stored before
    the reason was kept. Kept for training to tell the audit apart; no rule reads it yet."""


@dataclass(frozen=True, slots=True)
class ExamplesFile:
    examples: list[Example]
    skipped_empty_text: int = 0
    unlabelled_demand_type: int = 0
    columns: tuple[str, ...] = field(default=())


def normalise_label(raw: str | None) -> str | None:
    """Compare labels ignoring case and spacing: " Billing /  Pay" == "billing / pay"."""
    if raw is None:
        return None
    label = re.sub(r"\s+", " ", raw).strip().lower()
    return label or None


_NOT_IN_SLUG = re.compile(r"[^a-z0-9_ /&'-]+")
_MAX_SLUG = 120


def slug_label(raw: str | None) -> str | None:
    """A label as a Slug (``^[a-z0-9][a-z0-9_ /&'-]*$``) so any export's labels can be
    purposes: "Card_Arrival" -> "card_arrival", "card arrival?" -> "card arrival",
    "Café & Bar" -> "cafe & bar". A label with no usable character keeps a stable hash."""
    label = normalise_label(raw)
    if label is None:
        return None
    ascii_only = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"\s+", " ", _NOT_IN_SLUG.sub(" ", ascii_only)).strip()
    cleaned = re.sub(r"^[^a-z0-9]+", "", cleaned)[:_MAX_SLUG].rstrip()
    if not cleaned:
        return "label-" + hashlib.sha256(label.encode()).hexdigest()[:10]
    return cleaned


_DEMAND_SUFFIX = re.compile(r"[ _-]*demand$")


def normalise_demand_type(raw: str | None) -> str | None:
    """``value`` or ``failure`` as people write them ("Value demand", "failure_demand");
    anything else counts as unlabelled, never guessed."""
    label = normalise_label(raw)
    if label is None:
        return None
    label = _DEMAND_SUFFIX.sub("", label)
    return label if label in _LABELLED_TYPES else None


def column_key(header: str) -> str:
    """A header as the column it names: "Demand Type", "demand-type" -> "demand_type"."""
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def read_examples_csv(path: Path | str) -> ExamplesFile:
    """Read examples with at least a ``text`` column; every label column is optional."""
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty file, expected a header with a 'text' column")
        columns = {column_key(name): name for name in reader.fieldnames if name}
        if "text" not in columns:
            raise ValueError(f"{path}: no 'text' column (found: {', '.join(columns) or 'none'})")
        examples: list[Example] = []
        skipped = unlabelled = 0
        for row in reader:

            def cell(name: str, row: dict[str, str | None] = row) -> str | None:
                original = columns.get(name)
                return row.get(original) if original is not None else None

            text = (cell("text") or "").strip()
            if not text:
                skipped += 1
                continue
            demand_type = normalise_demand_type(cell("demand_type"))
            if demand_type is None:
                unlabelled += 1
            failure_kind = slug_label(cell("failure_kind"))
            examples.append(
                Example(
                    text=text,
                    purpose=slug_label(cell("purpose")),
                    demand_type=demand_type,
                    failure_kind=failure_kind.replace(" ", "_") if failure_kind else None,
                    channel=normalise_label(cell("channel")),
                    sector=normalise_label(cell("sector")),
                )
            )
    return ExamplesFile(
        examples=examples,
        skipped_empty_text=skipped,
        unlabelled_demand_type=unlabelled,
        columns=tuple(columns),
    )
