from pathlib import Path

from services.cli.settings_doc import render_into, settings_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_configuration_table_is_current() -> None:
    text = README.read_text()
    assert render_into(text) == text, "README settings table is stale: run `make schemas`"


def test_every_setting_has_a_description() -> None:
    for line in settings_table().splitlines()[2:]:
        assert not line.endswith("|  |"), f"undocumented setting: {line}"
