"""Event contracts: one definition of each event, used by every service."""

from shared.events.base import Event
from shared.events.case import CaseEvent, CaseEventType
from shared.events.classification import (
    CausedBy,
    ClassificationMethod,
    DemandClassified,
    DemandType,
    FailureKind,
)
from shared.events.demand import Channel, DemandReceived
from shared.events.labels import DemandLabelled, LabelReason
from shared.events.purpose_metrics import (
    Capability,
    EndToEndPercentiles,
    PurposeMetrics,
    Signal,
)
from shared.events.signals import SpecialCauseSignalled
from shared.events.system_change import SystemChanged

ALL_EVENTS: tuple[type[Event], ...] = (
    DemandReceived,
    CaseEvent,
    DemandClassified,
    DemandLabelled,
    PurposeMetrics,
    SystemChanged,
    SpecialCauseSignalled,
)

__all__ = [
    "ALL_EVENTS",
    "Capability",
    "CaseEvent",
    "CaseEventType",
    "CausedBy",
    "Channel",
    "ClassificationMethod",
    "DemandClassified",
    "DemandLabelled",
    "DemandReceived",
    "DemandType",
    "EndToEndPercentiles",
    "Event",
    "FailureKind",
    "LabelReason",
    "PurposeMetrics",
    "Signal",
    "SpecialCauseSignalled",
    "SystemChanged",
]
