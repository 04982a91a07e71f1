"""`demandscope import`: past demands through the same admission, ledger and producer.

It publishes through IntakeService directly rather than over HTTP: a historic load is an
operator's job on a machine that reaches the broker and intake's database, it should not
need a running intake or a key, and one ledger claim per chunk of 500 rows is far faster
than 500 requests. The path is otherwise the same: validation, redaction, idempotency
(so re-running an import publishes nothing twice) and acks=all before a row counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from services.intake.import_rows import Row, read_rows
from services.intake.service import IntakeService, Outcome
from services.intake.validation import Admission, InvalidEvent, admit_demand, masked_problems
from shared.events import DemandReceived
from shared.privacy.redaction import Redactor
from shared.service.problems import FieldProblem

CHUNK = 500
_MAX_DEPTH = 8  # a demand nests two deep (attributes); a rejected row is written to this


@dataclass
class ImportSummary:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.rejected


async def import_file(
    path: Path,
    *,
    source: str,
    service: IntakeService,
    redactor: Redactor,
    rejected_out: TextIO,
    max_future_skew: timedelta,
    earliest: datetime,
    on_rows: Callable[[int], None] = lambda _count: None,
) -> ImportSummary:
    """Imports every row; rejected rows go to ``rejected_out`` as JSON lines with reasons.

    A rejected row is written redacted, every string in it (keys, attributes, identifiers
    refused as personal data) and its reasons too: the raw words never leave this process.
    """
    summary = ImportSummary()
    for chunk in _chunks(read_rows(path)):
        admission = Admission(
            key_source=source,
            now=datetime.now(UTC),
            max_future_skew=max_future_skew,
            redactor=redactor,
            earliest=earliest,
        )
        admitted: list[tuple[Row, DemandReceived]] = []
        for row in chunk:
            try:
                if row.error is not None:
                    raise InvalidEvent([FieldProblem(field="line", reason=row.error)])
                admitted.append((row, admit_demand(row.payload, admission)))
            except InvalidEvent as error:
                _reject(summary, rejected_out, row, error.problems, redactor)
        outcomes = await service.ingest([event for _, event in admitted], key_source=source)
        for (row, _event), outcome in zip(admitted, outcomes, strict=True):
            if outcome is Outcome.ACCEPTED:
                summary.accepted += 1
            elif outcome is Outcome.DUPLICATE:
                summary.duplicates += 1
            else:
                problem = FieldProblem(
                    field="id", reason="repeated within the file or being published"
                )
                _reject(summary, rejected_out, row, [problem], redactor)
        on_rows(len(chunk))
    return summary


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reject(
    summary: ImportSummary,
    out: TextIO,
    row: Row,
    problems: list[FieldProblem],
    redactor: Redactor,
) -> None:
    summary.rejected += 1
    problems = masked_problems(problems, redactor)
    for problem in problems:
        summary.reasons[problem.field] = summary.reasons.get(problem.field, 0) + 1
    entry = {
        "line": row.line,
        "row": _redacted(row.payload, redactor),
        "errors": [{"field": p.field, "reason": p.reason} for p in problems],
    }
    out.write(json.dumps(entry, default=str) + "\n")


def _redacted(payload: Any, redactor: Redactor, depth: int = 0) -> Any:
    """Every string in ``payload`` masked; what nests deeper than a demand can is left out."""
    if isinstance(payload, str):
        return redactor.redact(payload).text
    if isinstance(payload, dict | list) and depth >= _MAX_DEPTH:
        return "[left out: nested too deeply]"
    if isinstance(payload, dict):
        return {
            redactor.redact(str(key)).text: _redacted(value, redactor, depth + 1)
            for key, value in payload.items()
        }
    if isinstance(payload, list):
        return [_redacted(value, redactor, depth + 1) for value in payload]
    return payload
