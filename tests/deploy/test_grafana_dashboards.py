"""The Grafana dashboards and provisioning: structure, variables, and PromQL that parses."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.panel_queries import DASHBOARDS, load_dashboards, panel_queries, panels

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
RECORDED = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")


def recording_rules() -> set[str]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/rules/recording.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    boards = load_dashboards()
    assert set(boards) == {"demand", "capability", "pipeline"}
    uids = [board["uid"] for board in boards.values()]
    assert sorted(uids) == ["demandscope-capability", "demandscope-demand", "demandscope-pipeline"]


@pytest.mark.parametrize("name", ["demand", "capability", "pipeline"])
def test_every_panel_is_complete_and_fits_the_grid(name: str) -> None:
    board = load_dashboards()[name]
    assert board["schemaVersion"] >= 36
    assert "demandscope" in board["tags"]
    found = panels(board)
    assert len({panel["id"] for panel in found}) == len(found), "panel ids must be unique"
    for panel in found:
        where = f"{name} / {panel.get('title')}"
        assert panel["title"], where
        assert panel["description"], where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        grid = panel["gridPos"]
        assert grid["w"] > 0, where
        assert 0 <= grid["x"] <= 24 - grid["w"], where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == "${datasource}", where


@pytest.mark.parametrize("name", ["demand", "capability", "pipeline"])
def test_every_variable_used_is_defined(name: str) -> None:
    board = load_dashboards()[name]
    defined = {variable["name"] for variable in board["templating"]["list"]}
    assert "datasource" in defined
    grafana_builtin = {"__rate_interval", "__interval", "__range"}
    text = " ".join(target["expr"] for panel in panels(board) for target in panel["targets"])
    used = set(re.findall(r"\$\{?(\w+)", text)) - grafana_builtin
    assert used <= defined, f"undefined variables: {used - defined}"


def test_the_capability_dashboard_charts_one_purpose_chosen_from_a_variable() -> None:
    board = load_dashboards()["capability"]
    purpose = next(v for v in board["templating"]["list"] if v["name"] == "purpose")
    assert purpose["type"] == "query"
    assert purpose["multi"] is False
    for panel in panels(board):
        for target in panel["targets"]:
            assert 'purpose="$purpose"' in target["expr"], panel["title"]


def test_recorded_series_in_dashboards_are_recorded_by_the_rules() -> None:
    recorded = recording_rules()
    used = {
        name
        for query in panel_queries()
        for name in RECORDED.findall(re.sub(r"\{[^}]*\}", "", query.expr))
    }
    assert used, "the dashboards are expected to use the recording rules"
    assert used <= recorded, f"not recorded: {used - recorded}"


def test_every_panel_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    # promtool has no "check expression"; a rule file with one recording rule per query does.
    queries = panel_queries()
    rules = [{"record": f"panel_query_{index}", "expr": q.expr} for index, q in enumerate(queries)]
    path = tmp_path / "panel_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run(
        [str(promtool), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    datasources: dict[str, Any] = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yaml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    providers: dict[str, Any] = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/demandscope.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/demandscope"
    assert DASHBOARDS == GRAFANA / "dashboards"
