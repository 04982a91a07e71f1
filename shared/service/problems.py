"""One error format for every service: RFC 9457 problem documents (``application/problem+json``).

- ``FieldProblem``: a field and what is wrong with it (the one type for that, everywhere);
- ``Problem``: the document, as a pydantic model so that OpenAPI shows it;
- ``ProblemError``: raise it anywhere in a request to answer with a problem document;
- ``install_problem_handlers(app)``: renders ``ProblemError``, request validation errors
  (422, one entry per field), ``HTTPException`` (404, 405, ...) and unexpected errors (500
  without a traceback in the answer) in that one format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldProblem(BaseModel):
    """A field and what is wrong with it."""

    model_config = {"frozen": True}

    field: str = Field(description="Path of the faulty field, e.g. 'text' or 'attributes.x'.")
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details, with one entry per invalid field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldProblem] = Field(default_factory=list)


class ProblemError(Exception):
    """Answer the request with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        *,
        detail: str | None = None,
        problems: Iterable[FieldProblem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail or ''}")
        self.status = status
        self.title = title
        self.detail = detail
        self.problems = list(problems)
        self.headers = headers

    def document(self) -> Problem:
        return Problem(
            title=self.title, status=self.status, detail=self.detail, errors=self.problems
        )


def problem_response(problem: ProblemError) -> JSONResponse:
    return JSONResponse(
        problem.document().model_dump(exclude_none=True),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def field_problems(errors: Sequence[Any], prefix: str = "") -> list[FieldProblem]:
    """pydantic/FastAPI validation errors as field problems (never echoing the input)."""
    problems = []
    for item in errors:
        location = [str(part) for part in item.get("loc", ())]
        path = prefix + (".".join(location) or "request")
        problems.append(FieldProblem(field=path, reason=str(item.get("msg", "is invalid"))))
    return problems


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def title_for(status: int) -> str:
    return _TITLES.get(status, "Error")


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of the app as a problem document (call once per app)."""

    async def render_problem(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ProblemError)
        return problem_response(error)

    async def render_invalid(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return problem_response(
            ProblemError(422, "Invalid request", problems=field_problems(error.errors()))
        )

    async def render_http(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        detail = error.detail if isinstance(error.detail, str) else None
        return problem_response(
            ProblemError(
                error.status_code,
                title_for(error.status_code),
                detail=detail,
                headers=dict(error.headers) if error.headers else None,
            )
        )

    async def client_gone(request: Request, _error: Exception) -> JSONResponse:
        # Nobody reads this answer: a client that hangs up mid-body is routine, not an error.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return problem_response(ProblemError(400, "Bad request", detail="client disconnected"))

    async def render_unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises it after this answer, and the server logs the traceback once.
        log.error("unexpected error on %s %s: %r", request.method, request.url.path, error)
        return problem_response(
            ProblemError(500, "Internal server error", detail="An unexpected error; it is logged.")
        )

    app.add_exception_handler(ProblemError, render_problem)
    app.add_exception_handler(RequestValidationError, render_invalid)
    app.add_exception_handler(StarletteHTTPException, render_http)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, render_unexpected)
