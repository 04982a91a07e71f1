"""promtool on the shipped configuration: the config, the rules and the alerts' unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
EVERY_ALERT = {
    "DemandscopeSpecialCauseSignal",
    "DemandscopeFailureShareBeyondLimit",
    "DemandscopeConsumerLagGrowing",
    "DemandscopeDeadLetters",
    "DemandscopeIntakeRefusingEvents",
    "DemandscopeIntakeServerErrors",
    "DemandscopeCheckpointFailing",
    "DemandscopeServiceDown",
    "DemandscopeBrokerDown",
    "DemandscopeBrokerPartitionsUnavailable",
}


def promtool_run(promtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(promtool), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_scrape_configuration_is_valid(promtool: Path) -> None:
    output = promtool_run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 2 rule files found" in output


def test_the_rules_are_valid(promtool: Path) -> None:
    output = promtool_run(promtool, "check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert f"SUCCESS: {len(EVERY_ALERT)} rules found" in output


def test_the_alerts_unit_tests_pass(promtool: Path) -> None:
    output = promtool_run(promtool, "test", "rules", "tests/alerts_test.yml")
    assert "SUCCESS" in output


def test_the_recording_rules_unit_tests_pass(promtool: Path) -> None:
    output = promtool_run(
        promtool, "test", "rules", "tests/recording_test.yml", "tests/failure_share_test.yml"
    )
    assert output.count("SUCCESS") == 2


def test_every_alert_has_a_summary_a_description_and_a_runbook_in_the_docs() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EVERY_ALERT
    for rule in rules:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        anchor = str(annotations["runbook_url"]).rsplit("#", 1)[1]
        assert anchor == str(rule["alert"]).lower()
        assert f"### {rule['alert']}" in operations, f"no runbook for {rule['alert']}"


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    files = [PROMETHEUS / "tests" / name for name in ("alerts_test.yml", "failure_share_test.yml")]
    tests = [test for path in files for test in yaml.safe_load(path.read_text())["tests"]]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == EVERY_ALERT
    assert quiet == EVERY_ALERT
