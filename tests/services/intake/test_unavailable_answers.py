"""The 503 answers of a request whose events the broker or the ledger could not take: the
single route raises them from its own ingest (one coroutine frame less, docs/performance.md
round fourteen), the batch route through ``_ingest``; both answer and count alike."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.intake.config import IntakeSettings
from services.intake.ledger import LedgerUnavailable
from services.intake.service import IntakeService
from shared.kafka.producer import BrokerUnavailable
from tests.support.factories import demand_body

pytestmark = pytest.mark.integration

BROKER = (
    BrokerUnavailable("broker did not acknowledge in time"),
    "Broker unavailable",
    "Nothing was accepted: broker did not acknowledge in time. Retry later.",
    "broker_unavailable",
)
LEDGER = (
    LedgerUnavailable("the ledger writer is not running"),
    "Idempotency ledger unavailable",
    "Nothing was accepted: intake cannot check for duplicates. Retry later.",
    "ledger_unavailable",
)


@pytest.fixture
def intake_settings(intake_settings: IntakeSettings) -> IntakeSettings:
    """Not the default Retry-After: the answers must carry the setting's."""
    return intake_settings.model_copy(update={"retry_after_s": 7})


def _value(exposition: str, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(prefix)
    )


@pytest.mark.parametrize("fault", [BROKER, LEDGER], ids=["broker", "ledger"])
@pytest.mark.parametrize("raised_on", ["call", "await"])
async def test_a_refused_ingest_is_answered_503_with_its_reason_and_counted(
    intake: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    fault: tuple[Exception, str, str, str],
    raised_on: str,
) -> None:
    error, title, detail, reason = fault

    def raised_by_the_call(self: IntakeService, events: Any, *, key_source: str) -> Any:
        raise error

    async def raised_when_awaited(self: IntakeService, events: Any, *, key_source: str) -> Any:
        raise error

    ingest = raised_by_the_call if raised_on == "call" else raised_when_awaited
    monkeypatch.setattr(IntakeService, "ingest", ingest)
    rejected = (
        f'demandscope_intake_events_rejected_total{{kind="any",reason="{reason}",source="demo"}}'
    )
    before = (await intake.get("/metrics")).text

    single = await intake.post("/v1/demands", json=demand_body(id="u-1"))
    batch = await intake.post(
        "/v1/demands:batch", json=[demand_body(id="u-2"), demand_body(id="u-3")]
    )
    after = (await intake.get("/metrics")).text

    for answer in (single, batch):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "7"
        assert answer.json()["title"] == title
        assert answer.json()["detail"] == detail
    assert _value(after, rejected) - _value(before, rejected) == 3  # 1 + 2 events
    unavailable = "demandscope_intake_broker_unavailable_total "
    expected = 2 if reason == "broker_unavailable" else 0
    assert _value(after, unavailable) - _value(before, unavailable) == expected
