"""People's labels, kept as training data, and the demand texts they may refer to.

One SQLite file under the model directory (``labels.sqlite3``). A label is stored once per
label id (a redelivered label changes nothing); the latest label of a demand wins. A label
may come without the demand's text: the text the classifier saw is kept for a bounded time
(the context window) so the label can still teach the model.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from services.classifier.model.examples import Example
from shared.events import DemandLabelled
from shared.events.classification import DemandType

LABELS_FILE = "labels.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    label_id TEXT PRIMARY KEY,
    demand_id TEXT NOT NULL,
    demand_type TEXT NOT NULL,
    failure_kind TEXT,
    purpose TEXT NOT NULL,
    labelled_at TEXT NOT NULL,
    labelled_by TEXT NOT NULL,
    text TEXT
);
CREATE INDEX IF NOT EXISTS labels_by_demand ON labels (demand_id, labelled_at);
CREATE TABLE IF NOT EXISTS demand_texts (
    demand_id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS demand_texts_by_time ON demand_texts (seen_at);
"""


@dataclass(frozen=True, slots=True)
class SeenText:
    demand_id: str
    text: str
    seen_at: datetime


class LabelStore:
    def __init__(self, model_dir: Path | str) -> None:
        path = Path(model_dir)
        path.mkdir(parents=True, exist_ok=True)
        # Written from the consumer loop, read by `classifier retrain` in another process.
        self._db = sqlite3.connect(path / LABELS_FILE, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_labels(self, labels: Sequence[DemandLabelled]) -> int:
        """Store labels (idempotent by label id); return how many were new."""
        if not labels:
            return 0
        before = self.count()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        label.id,
                        label.demand_id,
                        label.demand_type.value,
                        label.failure_kind,
                        label.purpose,
                        label.labelled_at.isoformat(),
                        label.labelled_by,
                        label.text,
                    )
                    for label in labels
                ],
            )
        return self.count() - before

    def remember_texts(self, texts: Sequence[SeenText]) -> None:
        if not texts:
            return
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO demand_texts VALUES (?, ?, ?)",
                [(t.demand_id, t.text, t.seen_at.isoformat()) for t in texts],
            )

    def forget_texts_before(self, horizon: datetime) -> int:
        with self._db:
            cursor = self._db.execute(
                "DELETE FROM demand_texts WHERE seen_at < ?", (horizon.isoformat(),)
            )
        return cursor.rowcount

    def count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM labels").fetchone()
        return int(row[0])

    def training_examples(self) -> list[Example]:
        """The latest label of each demand whose text is known, as a training example.

        A label saying ``unknown`` has no demand type, so training leaves it out.
        """
        rows = self._db.execute(
            """
            SELECT COALESCE(l.text, t.text), l.purpose, l.demand_type, l.failure_kind
            FROM labels AS l
            LEFT JOIN demand_texts AS t ON t.demand_id = l.demand_id
            WHERE l.rowid = (
                SELECT l2.rowid FROM labels AS l2 WHERE l2.demand_id = l.demand_id
                ORDER BY l2.labelled_at DESC, l2.rowid DESC LIMIT 1
            )
            ORDER BY l.labelled_at, l.rowid
            """
        ).fetchall()
        return [
            Example(
                text=text,
                purpose=purpose,
                demand_type=None if demand_type == DemandType.UNKNOWN.value else demand_type,
                failure_kind=failure_kind if demand_type == DemandType.FAILURE.value else None,
            )
            for text, purpose, demand_type, failure_kind in rows
            if text
        ]
