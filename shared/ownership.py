"""Which team owns each customer purpose: read from the taxonomy file, for every service.

The taxonomy (``services/classifier/data/taxonomy.yaml`` and its like) names an ``owner`` per
purpose and a taxonomy-level ``default_owner`` for purposes without one. The classifier
validates the whole file (``services/classifier/taxonomy.py``); the metrics service, which
must not import the classifier, reads only the owners through ``load_purpose_owners``. Both
use ``TeamSlug`` and ``DEFAULT_OWNER`` from here, so the two readings cannot drift apart.

An owner becomes a Prometheus label and an Alertmanager route, so it is a short plain slug
(a bounded set: the teams of one taxonomy). A purpose the taxonomy does not know (renamed, or
a label that predates the taxonomy) belongs to the default owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import StringConstraints, TypeAdapter, ValidationError

# Lowercase letters, digits and hyphens, as a Kubernetes name or a chat channel: safe in a
# label value, a route matcher and a receiver name.
TeamSlug = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
]
# Whoever runs demandscope: the team a purpose belongs to when its taxonomy names nobody,
# and the receiver of the broker and service health alerts.
DEFAULT_OWNER = "ops"

_TEAM = TypeAdapter(TeamSlug)


class OwnershipError(ValueError):
    """The taxonomy's owners cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class PurposeOwners:
    """The owner of each purpose of a taxonomy, and who owns the rest."""

    default: str = DEFAULT_OWNER
    owners: Mapping[str, str] = field(default_factory=dict)

    def owner_of(self, purpose: str) -> str:
        return self.owners.get(purpose, self.default)

    @property
    def teams(self) -> tuple[str, ...]:
        """Every team that owns a purpose (the default included), sorted."""
        return tuple(sorted({self.default, *self.owners.values()}))


def check_team(value: Any) -> str:
    """A team slug, or ``ValueError`` saying what a team slug looks like."""
    try:
        return _TEAM.validate_python(value)
    except ValidationError as error:
        raise ValueError(
            f"{value!r} is not a team slug (lowercase letters, digits and '-', at most 63, "
            "starting with a letter or digit)"
        ) from error


def _purpose_entries(purposes: Any) -> list[tuple[str, Any]]:
    """(slug, definition) of each purpose, in either form the taxonomy allows."""
    if isinstance(purposes, dict):
        return [(str(slug), body) for slug, body in purposes.items()]
    if isinstance(purposes, list):
        return [
            (str(entry.get("slug", entry.get("name"))), entry)
            for entry in purposes
            if isinstance(entry, dict)
        ]
    raise ValueError("'purposes' must be a mapping keyed by slug or a list")


def owners_from(raw: Mapping[str, Any]) -> PurposeOwners:
    """The owners of a taxonomy already read from YAML; ``ValueError`` naming the field."""
    default = raw.get("default_owner", DEFAULT_OWNER)
    try:
        default = check_team(default)
    except ValueError as error:
        raise ValueError(f"default_owner: {error}") from None
    owners: dict[str, str] = {}
    for slug, body in _purpose_entries(raw.get("purposes")):
        owner = body.get("owner") if isinstance(body, dict) else None
        if owner is None:
            continue
        try:
            owners[slug] = check_team(owner)
        except ValueError as error:
            raise ValueError(f"purposes.{slug}.owner: {error}") from None
    return PurposeOwners(default=default, owners=owners)


def load_purpose_owners(path: Path | str) -> PurposeOwners:
    """Read the owners from a taxonomy YAML file; ``OwnershipError`` naming what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise OwnershipError(f"{path}: cannot read the taxonomy: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise OwnershipError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise OwnershipError(f"{path}: the top level must be a mapping with 'purposes'")
    try:
        return owners_from(raw)
    except ValueError as error:
        raise OwnershipError(f"{path}: {error}") from error
