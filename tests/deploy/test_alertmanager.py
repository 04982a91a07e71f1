"""deploy/alertmanager/alertmanager.yml: generated from the taxonomy, never stale, valid for
amtool, and every alert of the rules' unit tests reaches its owning team (or ops)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from services.cli.main import app
from services.metrics.alertmanager import OPS_RECEIVER, alertmanager_config, receiver_of
from services.metrics.config import SHIPPED_TAXONOMY
from shared.ownership import PurposeOwners, load_purpose_owners

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))


def amtool_run(amtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(amtool), *args], capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return done.stdout


def alerts_of_the_rule_tests() -> list[dict[str, str]]:
    """The label sets of every alert the rules' unit tests expect to fire."""
    alerts = []
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                for alert in check["exp_alerts"]:
                    labels = {"alertname": check["alertname"], **alert.get("exp_labels", {})}
                    alerts.append({k: str(v) for k, v in labels.items()})
    return alerts


def test_the_committed_configuration_is_what_the_command_writes(tmp_path: Path) -> None:
    out = tmp_path / "alertmanager.yml"
    result = CliRunner().invoke(app, ["metrics", "alertmanager", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert out.read_text() == CONFIG.read_text(), (
        "deploy/alertmanager/alertmanager.yml is stale: run `demandscope metrics alertmanager`"
    )


def test_every_team_of_the_taxonomy_has_a_route_and_a_receiver() -> None:
    owners = load_purpose_owners(SHIPPED_TAXONOMY)
    config = yaml.safe_load(CONFIG.read_text())
    routes = {tuple(r["matchers"]): r["receiver"] for r in config["route"]["routes"]}
    receivers = {r["name"] for r in config["receivers"]}

    assert config["route"]["receiver"] == OPS_RECEIVER
    assert routes == {(f'owner="{t}"',): receiver_of(t) for t in owners.teams}
    assert receivers == {OPS_RECEIVER, *routes.values()}
    assert CONFIG.read_text().count("# replace with your team's receiver") == len(receivers)


def test_a_taxonomy_owned_by_ops_alone_routes_everything_to_ops() -> None:
    config = alertmanager_config(PurposeOwners())

    assert config["route"]["routes"] == []
    assert [r["name"] for r in config["receivers"]] == [OPS_RECEIVER]


def test_a_taxonomy_that_cannot_be_read_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "taxonomy.yaml"
    bad.write_text("purposes:\n  moving home: {owner: Moves Team}\n")
    out = tmp_path / "alertmanager.yml"
    result = CliRunner().invoke(
        app, ["metrics", "alertmanager", "--taxonomy", str(bad), "--out", str(out)]
    )

    assert result.exit_code == 1
    assert "purposes.moving home.owner" in result.output
    assert not out.exists()


def test_amtool_accepts_the_configuration(amtool: Path) -> None:
    output = amtool_run(amtool, "check-config", str(CONFIG))

    assert "SUCCESS" in output


def test_the_tested_alerts_include_purpose_alerts_of_two_teams_and_health_alerts() -> None:
    """Else the routing test below could pass with every alert at ops."""
    teams = load_purpose_owners(SHIPPED_TAXONOMY).teams
    owners = {alert["owner"] for alert in alerts_of_the_rule_tests() if "owner" in alert}

    assert len(owners) >= 2
    assert owners <= set(teams)  # a team the taxonomy does not know would fall through to ops
    assert any("owner" not in alert for alert in alerts_of_the_rule_tests())


@pytest.mark.parametrize(
    "labels", alerts_of_the_rule_tests(), ids=lambda labels: "-".join(labels.values())[:80]
)
def test_each_tested_alert_reaches_its_owning_team_or_ops(
    amtool: Path, labels: dict[str, str]
) -> None:
    expected = receiver_of(labels["owner"]) if "owner" in labels else OPS_RECEIVER
    output = amtool_run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={expected}",
        *(f"{name}={value}" for name, value in labels.items()),
    )

    assert output.split() == [expected]
