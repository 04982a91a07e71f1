"""``MetricsComponents``: what ``main.build`` opens for the metrics service, typed.

A module of its own so that ``api.py`` can name the type (its dependency alias) while
``main.py`` imports ``api.py`` for the routes, without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.metrics.audit import AuditPolicy, QueueTextPurge
from services.metrics.changes import ChangeRecorder
from services.metrics.config import MetricsSettings
from services.metrics.metrics import MetricsServiceMetrics
from services.metrics.pages.desk import Desk
from services.metrics.publisher import PurposeMetricsPublisher
from services.metrics.service import ChartSettings
from services.metrics.signals import SignalOutbox
from shared.auth.sessions import PeopleGate
from shared.kafka.producer import ManagedProducer
from shared.kafka.service import ConsumerService
from shared.ownership import PurposeOwners
from shared.service.components import ServiceComponents
from shared.service.readiness import ReadinessCheck, reachable


@dataclass(kw_only=True)
class MetricsComponents(ServiceComponents):
    settings: MetricsSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: MetricsServiceMetrics
    chart_settings: ChartSettings
    producer: ManagedProducer
    publisher: PurposeMetricsPublisher
    signal_outbox: SignalOutbox  # sends raised signals to capability.signals
    owners: PurposeOwners  # the taxonomy's owner of each purpose
    consumer: ConsumerService
    people: PeopleGate  # who is signed in to the pages (services/metrics/pages)
    audit: AuditPolicy
    purge: QueueTextPurge
    changes: ChangeRecorder  # publishes recorded changes to the system (API and pages)
    desk: Desk = field(default_factory=Desk)  # the queues' pages: each person's last decisions

    async def before_scrape(self) -> None:
        # Every replica reads the per-purpose gauges from the shared database: two replicas
        # never show two truths for one purpose (docs/operations.md).
        await self.publisher.refresh_gauges()

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return {
            "database": reachable(self.engine),
            "kafka": self.consumer.is_ready,  # polling, not stuck on a batch
            "publisher": self.producer.is_ready,  # purpose.metrics can be published
        }
