"""The compose setup, checked offline: the Compose Specification schema (the one behind
`docker compose config`, vendored in tests/deploy/schemas) and what a schema cannot see."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
APPLICATIONS = {"intake": 8000, "classifier": 8001, "metrics": 8002}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return loaded


def test_the_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(compose()), key=lambda e: e.path
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_it_runs_the_broker_the_database_the_services_prometheus_and_grafana() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in APPLICATIONS:
        assert services[name]["command"] == [name, "serve"]


def test_every_dependency_waited_on_is_healthy_or_done() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on an unknown {dependency}"
            wanted = condition["condition"]
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            else:
                assert wanted == "service_completed_successfully", (name, dependency)
                assert services[dependency].get("restart", "no") == "no", dependency


def test_the_services_start_after_the_migrations_and_probe_their_readiness() -> None:
    services = compose()["services"]
    for name, port in APPLICATIONS.items():
        service = services[name]
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert service["depends_on"]["kafka"] == {"condition": "service_healthy"}
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
    migrate = services["migrate"]["command"][0]
    assert "demandscope topics create" in migrate
    assert "demandscope migrate" in migrate  # intake's ledger, API keys, metrics


def test_every_file_mounted_from_the_repository_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts a missing {source}"


def test_prometheus_in_compose_scrapes_the_shipped_jobs() -> None:
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    inside = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in shipped["scrape_configs"]]
    assert [job["job_name"] for job in inside["scrape_configs"]] == jobs
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in inside["scrape_configs"]}
    assert targets["kafka"] == ["kafka:9404"]
    for name, port in APPLICATIONS.items():
        assert targets[f"demandscope-{name}"] == [f"{name}:{port}"]
    rules = [re.sub(r"^.*/rules/", "rules/", path) for path in inside["rule_files"]]
    assert rules == shipped["rule_files"]


def test_prometheus_in_compose_has_a_valid_configuration(promtool: Path) -> None:
    # --syntax-only: the rule files are paths inside the container.
    done = subprocess.run(
        [str(promtool), "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_in_compose_alerts_through_the_shipped_alertmanager_configuration() -> None:
    services = compose()["services"]
    inside = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = inside["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    alertmanager = services["alertmanager"]
    assert alertmanager["image"].startswith("prom/alertmanager:")
    mounted = {v.split(":")[0]: v.split(":")[1] for v in alertmanager["volumes"]}
    config = next(arg for arg in alertmanager["command"] if arg.startswith("--config.file="))
    assert mounted["../alertmanager/alertmanager.yml"] == config.split("=", 1)[1]
    assert services["prometheus"]["depends_on"]["alertmanager"] == {"condition": "service_healthy"}
