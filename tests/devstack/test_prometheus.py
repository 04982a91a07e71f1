"""The local Prometheus's generated configuration: the shipped jobs with this machine's targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.prometheus import (
    DEFAULT_TARGETS,
    NOT_INSTALLED_HINT,
    LocalPrometheusConfig,
    LocalPrometheusError,
    render_config,
    start,
    start_if_installed,
)

ROOT = Path(__file__).resolve().parents[2]


def shipped() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    return loaded


def test_the_defaults_scrape_the_three_services_and_the_broker_as_shipped() -> None:
    config = render_config(shipped(), LocalPrometheusConfig(root=ROOT))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "demandscope-intake": ["127.0.0.1:8000"],
        "demandscope-classifier": ["127.0.0.1:8001"],
        "demandscope-metrics": ["127.0.0.1:8002"],
        "kafka": ["127.0.0.1:9404"],
    }
    assert targets == {job: list(hosts) for job, hosts in DEFAULT_TARGETS.items()}


def test_targets_intervals_and_rule_paths_are_those_of_the_instance(tmp_path: Path) -> None:
    cfg = LocalPrometheusConfig(
        root=ROOT,
        run_dir=tmp_path,
        targets={"demandscope-intake": ["127.0.0.1:18000"], "kafka": ["127.0.0.1:19404"]},
        scrape_interval="1s",
        evaluation_interval="2s",
    )
    config = render_config(shipped(), cfg)
    assert [job["job_name"] for job in config["scrape_configs"]] == ["demandscope-intake", "kafka"]
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:18000"]}]
    assert config["global"]["scrape_interval"] == "1s"
    assert config["global"]["evaluation_interval"] == "2s"
    assert config["global"]["external_labels"] == {"system": "demandscope"}
    assert config["rule_files"] == [
        str(ROOT / "deploy/prometheus/rules/recording.yml"),
        str(ROOT / "deploy/prometheus/rules/alerts.yml"),
    ]
    assert "alerting" not in config


def test_a_target_without_a_shipped_job_is_refused() -> None:
    cfg = LocalPrometheusConfig(root=ROOT, targets={"node": ["127.0.0.1:9100"]})
    with pytest.raises(LocalPrometheusError, match="no scrape job named node"):
        render_config(shipped(), cfg)


def test_without_the_binary_start_says_how_to_install_it(tmp_path: Path) -> None:
    cfg = LocalPrometheusConfig(root=ROOT, run_dir=tmp_path, binary="no-such-prometheus-binary")
    with pytest.raises(LocalPrometheusError, match="make setup"):
        start(cfg)
    assert start_if_installed(cfg) == NOT_INSTALLED_HINT
    assert not cfg.pid_file.exists()
