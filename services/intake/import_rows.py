"""Rows of a historic demand file (CSV or JSON Lines) as the JSON objects intake admits.

CSV: one column per DemandSubmission field (``id, occurred_at, channel, source,
customer_ref, case_ref, text, reason_code, team``); ``attr.NAME`` columns become
attributes; empty cells count as absent. JSONL: one demand object per line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.intake.body import InvalidJson, parse_json

ATTRIBUTE_PREFIX = "attr."


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the file where the row starts (header is line 1 in CSV)
    payload: Any  # a dict for the admission, or the raw text of a line that is not JSON
    error: str | None = None


def read_rows(path: Path) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(path)
    raise ValueError(f"{path.name}: expected a .csv or .jsonl file")


def count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(lines - 1, 0) if path.suffix.lower() == ".csv" else lines


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield Row(reader.line_num, csv_payload(record))


def csv_payload(record: dict[str, str | None]) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for column, value in record.items():
        if column is None or value is None or value == "":
            continue
        if column.startswith(ATTRIBUTE_PREFIX):
            attributes[column[len(ATTRIBUTE_PREFIX) :]] = value
        else:
            payload[column.strip()] = value
    if attributes:
        payload["attributes"] = attributes
    return payload


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = Row(number, parse_json(line.encode()))
            except InvalidJson as error:
                # The same parser as the HTTP API: a line nested too deeply or with a
                # 5,000-digit number is a rejected row, never a crash of the import.
                row = Row(number, line.rstrip("\n"), error=str(error))
            yield row
