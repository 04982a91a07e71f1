"""Any table of the API as CSV: `?format=csv` or `Accept: text/csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel

CSV_MEDIA_TYPE = "text/csv"


def wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return CSV_MEDIA_TYPE in request.headers.get("accept", "")


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, into)
    elif isinstance(value, list):
        into[prefix] = ";".join(str(item) for item in value)
    else:
        into[prefix] = value


def to_csv(rows: Sequence[BaseModel], columns: Sequence[str]) -> str:
    """One line per row; nested objects become dotted columns (end_to_end.p50_seconds)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat: dict[str, Any] = {}
        _flatten("", row.model_dump(mode="json"), flat)
        writer.writerow({column: flat.get(column) for column in columns})
    return buffer.getvalue()


def columns_of(model: type[BaseModel]) -> list[str]:
    """The dotted column names of a model, from its fields (so an empty table has a header)."""
    columns: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            columns += [f"{name}.{inner}" for inner in columns_of(annotation)]
        else:
            columns.append(name)
    return columns


def csv_response(rows: Sequence[BaseModel], model: type[BaseModel], name: str) -> Response:
    return Response(
        to_csv(rows, columns_of(model)),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
