"""The Kubernetes manifests, checked offline against the Kubernetes schemas (kubernetes-validate
ships them) and for what the operations guide promises: probes, resources, secrets by
reference, one transactional id prefix for every pod, consumers scaled within the partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in documents(path)
    }


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return found


def partitions() -> int:
    config = resources()[("ConfigMap", "demandscope-config")]["data"]
    return int(config["DEMANDSCOPE_KAFKA_PARTITIONS"])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_is_valid_for_kubernetes(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in MANIFESTS]


@pytest.mark.parametrize(
    ("kind", "name", "port"),
    [
        ("Deployment", "demandscope-intake", 8000),
        ("StatefulSet", "demandscope-classifier", 8001),
        ("Deployment", "demandscope-metrics", 8002),
    ],
)
def test_services_are_probed_limited_and_configured_by_reference(
    kind: str, name: str, port: int
) -> None:
    (container,) = containers(resources()[(kind, name)])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert container["envFrom"] == [{"configMapRef": {"name": "demandscope-config"}}]
    for variable in container["env"]:
        assert "value" not in variable, f"{variable['name']} must come by reference"
    secrets = [v for v in container["env"] if "secretKeyRef" in v["valueFrom"]]
    assert {v["valueFrom"]["secretKeyRef"]["name"] for v in secrets} == {"demandscope-secrets"}
    assert ("Service", name) in resources()


def test_every_classifier_pod_shares_the_transactional_id_prefix() -> None:
    # Transactional ids are per input partition (<prefix>-<topic>-<partition>): a prefix per
    # pod would give each pod ids of its own, and a paused pod would no longer be fenced.
    classifier = resources()[("StatefulSet", "demandscope-classifier")]
    (container,) = containers(classifier)
    names = {v["name"] for v in container["env"]}
    assert "DEMANDSCOPE_CLASSIFIER_TRANSACTIONAL_ID" not in names
    assert classifier["spec"]["replicas"] <= partitions()


def test_consumers_never_scale_beyond_the_partitions_and_intake_scales_freely() -> None:
    found = resources()
    metrics_hpa = found[("HorizontalPodAutoscaler", "demandscope-metrics")]["spec"]
    assert metrics_hpa["maxReplicas"] == partitions()
    assert found[("Deployment", "demandscope-metrics")]["spec"]["replicas"] <= partitions()
    assert ("HorizontalPodAutoscaler", "demandscope-classifier") not in found
    assert found[("HorizontalPodAutoscaler", "demandscope-intake")]["spec"]["maxReplicas"] >= 2


def test_the_migration_job_runs_the_topics_and_the_schemas() -> None:
    job = resources()[("Job", "demandscope-migrate")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "demandscope topics create" in container["args"][0]
    assert "demandscope migrate" in container["args"][0]  # ledger, keys, classifier, metrics


@pytest.mark.parametrize(
    ("kind", "name", "service"),
    [
        ("Deployment", "demandscope-intake", "INTAKE"),
        ("StatefulSet", "demandscope-classifier", "CLASSIFIER"),
        ("Deployment", "demandscope-metrics", "METRICS"),
    ],
)
def test_each_service_uses_the_databases_the_migration_job_migrates(
    kind: str, name: str, service: str
) -> None:
    # A service never migrates its database itself: one the job does not reach (or a default
    # SQLite file on a read-only root) would leave it unable to start.
    found = resources()
    (job,) = containers(found[("Job", "demandscope-migrate")])
    migrated = {v["name"]: v.get("valueFrom") for v in job["env"]}
    (container,) = containers(found[(kind, name)])
    used = {v["name"]: v.get("valueFrom") for v in container["env"]}
    for variable in (f"DEMANDSCOPE_{service}_DATABASE_URL", "DEMANDSCOPE_AUTH_DATABASE_URL"):
        assert variable in used, f"{name} does not set {variable}"
        assert used[variable] == migrated.get(variable), f"{variable} differs from the job's"
