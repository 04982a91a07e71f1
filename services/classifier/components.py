"""``ClassifierComponents``: what the classifier's ``build`` opens, typed, in one object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.classifier.context import ContextStore
from services.classifier.db.repository import LabelRepository
from services.classifier.live_model import ModelKeeper
from services.classifier.model_worker import ModelWorker
from shared.kafka.service import ConsumerService
from shared.service.components import ServiceComponents
from shared.service.readiness import ReadinessCheck, reachable


@dataclass(kw_only=True)
class ClassifierComponents(ServiceComponents):
    consumer: ConsumerService
    model: ModelKeeper
    context: ContextStore
    labels: LabelRepository
    model_worker: ModelWorker | None = None  # predicting a backlog's next poll, if on

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return {
            "kafka": self.consumer.is_ready,
            "database": reachable(self.labels.engine),
            "auth_database": reachable(self.key_store.engine),
        }
