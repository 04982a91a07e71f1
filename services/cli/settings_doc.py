"""The one configuration table in the README, generated from the settings classes themselves."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings

from services.classifier.config import ClassifierSettings
from services.intake.config import IntakeSettings
from services.metrics.config import MetricsSettings
from services.metrics.pages.settings import PagesSettings
from shared.auth.settings import AuthSettings, PeopleSettings
from shared.kafka.settings import KafkaSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    KafkaSettings,
    AuthSettings,
    PeopleSettings,
    IntakeSettings,
    ClassifierSettings,
    MetricsSettings,
    PagesSettings,
)
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


REPO_ROOT = Path(__file__).resolve().parents[2]


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.default_factory is not None:
        return "(per instance)" if name == "transactional_id" else ""
    default = field.default
    if isinstance(default, Path) and default.is_absolute() and default.is_relative_to(REPO_ROOT):
        # Shipped files: say where they are in the checkout, not on this machine.
        default = f"<checkout>/{default.relative_to(REPO_ROOT)}"
    return "" if default is None else f"`{default}`"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for model in SETTINGS_CLASSES:
        prefix = str(model.model_config.get("env_prefix", ""))
        for name, field in model.model_fields.items():
            if isinstance(field.default_factory, type) and issubclass(
                field.default_factory, BaseSettings
            ):
                continue  # nested settings are documented under their own prefix
            variable = f"{prefix}{name}".upper()
            lines.append(f"| `{variable}` | {_default(model, name)} | {field.description or ''} |")
    return "\n".join(lines)


def render_into(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"
