"""The owners of a taxonomy's purposes, read without the classifier (as the metrics service
reads them): both written forms, the default owner, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ownership import DEFAULT_OWNER, OwnershipError, PurposeOwners, load_purpose_owners


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text)
    return path


def test_the_map_form_with_a_default_owner(tmp_path: Path) -> None:
    owners = load_purpose_owners(
        write(
            tmp_path,
            "default_owner: service-design\npurposes:\n"
            "  billing / pay my bill: {owner: billing}\n  moving home: {}\n  refunds:\n",
        )
    )

    assert owners == PurposeOwners("service-design", {"billing / pay my bill": "billing"})
    assert owners.owner_of("refunds") == "service-design"
    assert owners.teams == ("billing", "service-design")


def test_the_list_form_and_the_built_in_default(tmp_path: Path) -> None:
    owners = load_purpose_owners(
        write(tmp_path, "purposes:\n  - name: moving home\n    owner: moves\n  - slug: refunds\n")
    )

    assert owners.owner_of("moving home") == "moves"
    assert owners.owner_of("refunds") == DEFAULT_OWNER


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("purposes:\n  moving home: {owner: Moves Team}\n", "purposes.moving home.owner"),
        ("default_owner: -ops\npurposes:\n  moving home: {}\n", "default_owner"),
        ("purposes: 3\n", "'purposes' must be"),
        ("- a list\n", "top level"),
        ("purposes: [unclosed\n", "not valid YAML"),
    ],
)
def test_what_cannot_be_used_is_refused_naming_the_file_and_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(OwnershipError, match=problem) as error:
        load_purpose_owners(path)
    assert str(path) in str(error.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(OwnershipError, match="cannot read"):
        load_purpose_owners(tmp_path / "absent.yaml")
