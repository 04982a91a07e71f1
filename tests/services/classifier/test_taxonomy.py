from pathlib import Path

import pytest

from services.classifier.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

GOOD = """
purposes:
  billing / pay my bill:
    description: pay what they owe
    examples: [pay my bill]
    keywords: [direct debit]
  moving home: {}
failure_kinds:
  progress_chasing: {keywords: [still waiting]}
  other: {}
rules:
  - when_any: [ombudsman]
    purpose: moving home
    demand_type: failure
    failure_kind: other
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text)
    return path


def test_loads_the_documented_map_form(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(write(tmp_path, GOOD))

    assert taxonomy.purpose_slugs == ("billing / pay my bill", "moving home")
    assert taxonomy.failure_kind_slugs == ("progress_chasing", "other")
    assert taxonomy.rules[0].when_any == ("ombudsman",)


def test_accepts_a_list_of_named_purposes(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(
        write(tmp_path, "purposes:\n  - name: moving home\n  - slug: refunds\n")
    )

    assert taxonomy.purpose_slugs == ("moving home", "refunds")
    assert "progress_chasing" in taxonomy.failure_kind_slugs  # built-ins by default


def test_the_repository_taxonomy_loads() -> None:
    path = Path(__file__).parents[3] / "services/classifier/data/taxonomy.yaml"
    if not path.exists():
        pytest.skip("taxonomy not written yet")
    assert len(load_taxonomy(path).purposes) > 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("purposes: {}\n", "purposes"),
        ("purposes:\n  Billing!: {}\n", "purposes.0.slug"),
        ("purposes:\n  a: {examples: 3}\n", "purposes.0.examples"),
        ("purposes:\n  a: {colour: red}\n", "colour"),
        ("purposes:\n  a: {}\nrules:\n  - when_any: [x]\n    purpose: b\n", "rules.0.purpose"),
        ("purposes:\n  a: {}\nrules:\n  - when_any: [x]\n    demand_type: maybe\n", "demand_type"),
        ("purposes:\n  a: {}\nrules:\n  - when_any: [x]\n    failure_kind: other\n", "demand_type"),
        ("purposes:\n  a: {}\nrules:\n  - when_any: []\n    purpose: a\n", "when_any"),
        ("- just a list\n", "top level"),
        ("purposes: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_malformed_file_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(TaxonomyError, match="taxonomy") as caught:
        load_taxonomy(write(tmp_path, text))
    assert expected in str(caught.value)


def test_a_missing_file_is_a_taxonomy_error(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "absent.yaml")


def test_from_labels_makes_one_purpose_per_distinct_label() -> None:
    taxonomy = Taxonomy.from_labels(["b", "a", "b"])

    assert taxonomy.purpose_slugs == ("a", "b")
    assert taxonomy.content_hash() == Taxonomy.from_labels(["a", "b"]).content_hash()


OWNED = """
default_owner: customer-experience
purposes:
  billing / pay my bill: {owner: billing}
  moving home: {}
"""


def test_each_purpose_names_its_owner_and_the_default_owns_the_rest(tmp_path: Path) -> None:
    owners = load_taxonomy(write(tmp_path, OWNED)).owners()

    assert owners.owner_of("billing / pay my bill") == "billing"
    assert owners.owner_of("moving home") == "customer-experience"
    assert owners.owner_of("a purpose the taxonomy never had") == "customer-experience"
    assert owners.teams == ("billing", "customer-experience")


def test_without_a_default_owner_ops_owns_the_unowned(tmp_path: Path) -> None:
    owners = load_taxonomy(write(tmp_path, "purposes:\n  moving home: {}\n")).owners()

    assert owners.owner_of("moving home") == "ops"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("purposes:\n  moving home: {owner: Billing Team}\n", "purposes.0.owner"),
        ("default_owner: ''\npurposes:\n  moving home: {}\n", "default_owner"),
    ],
)
def test_an_owner_that_is_not_a_team_slug_is_refused_by_name(
    tmp_path: Path, text: str, field: str
) -> None:
    with pytest.raises(TaxonomyError, match=field):
        load_taxonomy(write(tmp_path, text))


def test_owners_do_not_change_the_fingerprint_a_model_is_trained_against(tmp_path: Path) -> None:
    plain = load_taxonomy(write(tmp_path, "purposes:\n  moving home: {}\n"))
    owned = load_taxonomy(
        write(tmp_path, "default_owner: lettings\npurposes:\n  moving home: {owner: moves}\n")
    )

    assert owned.content_hash() == plain.content_hash()


@pytest.mark.parametrize("name", ["taxonomy.yaml", "taxonomies/council_housing_repairs.yaml"])
def test_the_shipped_taxonomies_name_owners_as_the_metrics_service_reads_them(name: str) -> None:
    from shared.ownership import load_purpose_owners

    path = Path(__file__).parents[3] / "services/classifier/data" / name
    taxonomy = load_taxonomy(path)

    assert load_purpose_owners(path) == taxonomy.owners()
    assert len(taxonomy.owners().teams) > 3
    assert any(p.owner is None for p in taxonomy.purposes)  # the default owner at work
