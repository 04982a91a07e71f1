"""The request bodies in the OpenAPI page: every media type an endpoint reads, with examples.

The endpoints read their bodies themselves (to answer 413 and 415 precisely and to accept
CloudEvents beside plain JSON), so FastAPI cannot infer them; they are declared here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from services.intake.schemas import (
    DEMAND_EXAMPLE,
    CaseEventSubmission,
    DemandSubmission,
    LabelSubmission,
)
from shared.events import CaseEvent, DemandLabelled, DemandReceived

DOCUMENTED_MODELS: tuple[type[BaseModel], ...] = (
    DemandSubmission,
    CaseEventSubmission,
    LabelSubmission,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _cloudevent(ce_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "minLength": 1, "description": "Your key's source."},
            "type": {"type": "string", "enum": [ce_type]},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "enum": ["application/json"]},
            "data": {"type": "object"},
        },
        "example": {
            "specversion": "1.0",
            "id": data.get("id", "evt-1"),
            "source": "demo",
            "type": ce_type,
            "time": "2026-11-20T09:14:00+00:00",
            "datacontenttype": "application/json",
            "data": {key: value for key, value in data.items() if key not in ("id", "source")},
        },
    }


def _body(content: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": content}}


DEMAND_BODY = _body(
    {
        "application/json": {"schema": _ref(DemandSubmission), "example": DEMAND_EXAMPLE},
        "application/cloudevents+json": {
            "schema": _cloudevent(DemandReceived.CE_TYPE, DEMAND_EXAMPLE)
        },
    }
)
BATCH_BODY = _body(
    {
        "application/json": {
            "schema": {"type": "array", "maxItems": 1000, "items": _ref(DemandSubmission)},
            "example": [DEMAND_EXAMPLE],
        },
        "application/cloudevents-batch+json": {
            "schema": {
                "type": "array",
                "maxItems": 1000,
                "items": _cloudevent(DemandReceived.CE_TYPE, DEMAND_EXAMPLE),
            }
        },
    }
)
_CASE_EXAMPLE = CaseEventSubmission.model_json_schema()["examples"][0]
CASE_EVENT_BODY = _body(
    {
        "application/json": {"schema": _ref(CaseEventSubmission), "example": _CASE_EXAMPLE},
        "application/cloudevents+json": {"schema": _cloudevent(CaseEvent.CE_TYPE, _CASE_EXAMPLE)},
    }
)
_LABEL_EXAMPLE = LabelSubmission.model_json_schema()["examples"][0]
LABEL_BODY = _body(
    {
        "application/json": {"schema": _ref(LabelSubmission), "example": _LABEL_EXAMPLE},
        "application/cloudevents+json": {
            "schema": _cloudevent(DemandLabelled.CE_TYPE, _LABEL_EXAMPLE)
        },
    }
)


def install_openapi(app: FastAPI) -> None:
    """Adds the submission schemas to the components the bodies above refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
