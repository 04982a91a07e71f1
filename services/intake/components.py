"""``IntakeComponents``: what intake's ``build`` opens, typed, in one object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.config import IntakeSettings
from services.intake.metrics import IntakeMetrics
from services.intake.service import IntakeService
from shared.kafka.producer import ManagedProducer
from shared.privacy.redaction import Redactor
from shared.service.components import ServiceComponents
from shared.service.readiness import ReadinessCheck, reachable


@dataclass(kw_only=True)
class IntakeComponents(ServiceComponents):
    settings: IntakeSettings
    service: IntakeService
    redactor: Redactor
    metrics: IntakeMetrics
    producer: ManagedProducer
    ledger_engine: AsyncEngine

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return {
            "kafka": self.producer.is_ready,
            "database": reachable(self.ledger_engine),
            "auth_database": reachable(self.key_store.engine),
        }
