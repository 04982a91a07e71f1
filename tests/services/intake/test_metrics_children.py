"""IntakeMetrics.child: a labelled child looked up once, the one labels() gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.intake.metrics import IntakeMetrics


def test_a_child_is_the_labelled_one_and_counts_apart_from_the_others() -> None:
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry)

    phone = metrics.child(metrics.accepted, "demand", "phone", "crm")
    assert phone is metrics.accepted.labels("demand", "phone", "crm")
    assert metrics.child(metrics.accepted, "demand", "phone", "crm") is phone
    phone.inc(2)
    metrics.child(metrics.accepted, "demand", "email", "crm").inc()
    metrics.child(metrics.duplicates, "demand", "phone", "crm").inc(5)

    def value(name: str, channel: str) -> float | None:
        labels = {"kind": "demand", "channel": channel, "source": "crm"}
        return registry.get_sample_value(name, labels)

    assert value("demandscope_intake_events_accepted_total", "phone") == 2
    assert value("demandscope_intake_events_accepted_total", "email") == 1
    assert value("demandscope_intake_events_duplicate_total", "phone") == 5
