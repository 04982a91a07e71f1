"""The PromQL of every panel of the shipped dashboards, with template variables filled in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"

# What Grafana would put in: every purpose ($purpose is a multi-value regex or a single value;
# ".+" selects all of them), and intervals short enough for a test that runs for a minute.
TEST_VARIABLES = {
    "purpose": ".+",
    "__rate_interval": "30s",
    "__interval": "5s",
    "__range": "10m",
}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str
    choice: str = ""  # the value of a single-valued variable it was filled in with

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>\w+),\s*(?P<label>\w+)\)$")


@dataclass(frozen=True)
class LabelValuesVariable:
    """A query variable of the form label_values(metric, label), as Grafana resolves it."""

    dashboard: str
    name: str
    metric: str
    label: str
    multi: bool


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def query_variables(dashboard: dict[str, Any]) -> list[LabelValuesVariable]:
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["definition"])
        if match is None:
            raise ValueError(f"unsupported variable query {variable['definition']!r}")
        found.append(
            LabelValuesVariable(
                str(dashboard["title"]),
                variable["name"],
                match["metric"],
                match["label"],
                bool(variable["multi"] or variable["includeAll"]),
            )
        )
    return found


def fill(expr: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(value, expr)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [panel for panel in found if panel.get("type") != "row"]


def panel_queries(choices: dict[str, list[str]] | None = None) -> list[PanelQuery]:
    """Every panel target with its variables filled in.

    A multi-value variable gets ".+" (Grafana's "All"); a single-value one is filled with each
    of ``choices[name]`` in turn (one query per choice), or ".+" when no choices are given.
    """
    queries = []
    for board in load_dashboards().values():
        single = [v.name for v in query_variables(board) if not v.multi]
        variants: list[tuple[str, dict[str, str]]] = [("", dict(TEST_VARIABLES))]
        for name in single:
            values = (choices or {}).get(name)
            if values:
                variants = [
                    (f"{name}={value}", {**filled, name: value})
                    for _label, filled in variants
                    for value in values
                ]
        for panel in panels(board):
            for target in panel["targets"]:
                for choice, filled in variants:
                    expr = fill(target["expr"], filled)
                    title = str(board["title"])
                    queries.append(
                        PanelQuery(title, str(panel["title"]), target["refId"], expr, choice)
                    )
    return queries
