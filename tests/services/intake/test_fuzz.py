"""Schema-driven fuzzing (schemathesis) of intake's OpenAPI spec: no input gets a 5xx.

Runs against a real uvicorn server with the real broker and databases, so every
generated body goes through the whole path (auth, decoding, admission, ledger, Kafka).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 50


def test_no_generated_request_makes_intake_answer_5xx(intake_url: str, demo_key: str) -> None:
    schema = schemathesis.openapi.from_url(f"{intake_url}/openapi.json")
    auth = {"Authorization": f"Bearer {demo_key}"}
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    fuzzed = [op for op in operations if op.path.startswith("/v1/")]
    assert {op.path for op in fuzzed} == {
        "/v1/demands",
        "/v1/demands:batch",
        "/v1/case-events",
        "/v1/demands/{demand_id}/labels",
    }
    server_errors: list[str] = []
    statuses: set[int] = set()
    for operation in fuzzed:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(), with_key=st.booleans())
        def exercise(case: schemathesis.Case[Any], with_key: bool) -> None:
            response = case.call(base_url=intake_url, headers=auth if with_key else None)
            statuses.add(response.status_code)
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.operation.label}: {response.status_code} {response.text}"
                )

        exercise()
    assert server_errors == []
    # The generator reached both sides: refusals and events the broker acknowledged.
    assert {202, 401, 422} <= statuses, statuses
