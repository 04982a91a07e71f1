"""RFC 9457 problem answers: one exception type, rendered by one handler."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request
from fastapi.responses import JSONResponse

from services.intake.schemas import FieldError, Problem
from services.intake.validation import FieldProblem

PROBLEM_MEDIA_TYPE = "application/problem+json"


class IntakeProblem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        *,
        detail: str | None = None,
        problems: Sequence[FieldProblem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail or ''}")
        self.status = status
        self.title = title
        self.detail = detail
        self.problems = list(problems)
        self.headers = headers


def problem_response(problem: IntakeProblem) -> JSONResponse:
    body = Problem(
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        errors=[FieldError(field=p.field, reason=p.reason) for p in problem.problems],
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def render_problem(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, IntakeProblem)
    return problem_response(error)
