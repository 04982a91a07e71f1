"""An organisation's demand taxonomy: its customer purposes, failure kinds and explicit rules.

The YAML file is written by people, so loading it reports exactly which field is wrong and why.
Both ``purposes`` and ``failure_kinds`` may be written as a map keyed by slug (the documented
form) or as a list of entries that carry their own ``slug`` (or ``name``).

Each purpose may name its owning ``owner`` team; ``default_owner`` owns the others
(``shared/ownership.py``, which the metrics service reads the same file with).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.events.base import Slug
from shared.events.classification import DemandType, FailureKind
from shared.ownership import DEFAULT_OWNER, PurposeOwners, TeamSlug


class TaxonomyError(ValueError):
    """The taxonomy file cannot be used; the message names the file, the field and the reason."""


class PurposeDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: Slug
    description: str = ""
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    owner: TeamSlug | None = None  # the taxonomy's default_owner when not named


class FailureKindDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: Slug
    description: str = ""
    keywords: tuple[str, ...] = ()


class Rule(BaseModel):
    """An organisation's explicit override: any phrase found in the text decides these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when_any: tuple[str, ...] = Field(min_length=1)
    purpose: Slug | None = None
    demand_type: DemandType | None = None
    failure_kind: Slug | None = None

    @model_validator(mode="after")
    def _decides_something(self) -> Rule:
        if self.purpose is None and self.demand_type is None and self.failure_kind is None:
            raise ValueError("a rule must set at least one of purpose, demand_type, failure_kind")
        if self.demand_type is DemandType.UNKNOWN:
            raise ValueError("a rule cannot assign demand_type 'unknown'")
        if self.failure_kind is not None and self.demand_type is not DemandType.FAILURE:
            raise ValueError("failure_kind needs demand_type: failure")
        if any(not phrase.strip() for phrase in self.when_any):
            raise ValueError("when_any holds an empty phrase")
        return self


def _entries_from_map(value: Any) -> Any:
    """Turn ``{slug: {..}}`` into ``[{slug: .., ..}]``; lists pass through unchanged."""
    if isinstance(value, dict):
        entries = []
        for slug, body in value.items():
            body = {} if body is None else body
            if not isinstance(body, dict):
                raise ValueError(f"the definition of {slug!r} must be a mapping")
            entries.append({"slug": slug, **body})
        return entries
    if isinstance(value, list):
        return [
            {
                **{k: v for k, v in entry.items() if k != "name"},
                "slug": entry.get("slug", entry["name"]),
            }
            if isinstance(entry, dict) and "slug" not in entry and "name" in entry
            else entry
            for entry in value
        ]
    return value


def _builtin_failure_kinds() -> tuple[FailureKindDefinition, ...]:
    return tuple(FailureKindDefinition(slug=kind.value) for kind in FailureKind)


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purposes: tuple[PurposeDefinition, ...] = Field(min_length=1)
    failure_kinds: tuple[FailureKindDefinition, ...] = Field(default_factory=_builtin_failure_kinds)
    rules: tuple[Rule, ...] = ()
    default_owner: TeamSlug = DEFAULT_OWNER

    @model_validator(mode="before")
    @classmethod
    def _accept_maps(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("purposes", "failure_kinds"):
                if key in data:
                    data[key] = _entries_from_map(data[key])
            if data.get("rules") is None:
                data.pop("rules", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Taxonomy:
        _refuse_duplicates("purposes", [p.slug for p in self.purposes])
        _refuse_duplicates("failure_kinds", [k.slug for k in self.failure_kinds])
        purposes = set(self.purpose_slugs)
        kinds = set(self.failure_kind_slugs)
        for index, rule in enumerate(self.rules):
            if rule.purpose is not None and rule.purpose not in purposes:
                raise ValueError(
                    f"rules.{index}.purpose: {rule.purpose!r} is not a defined purpose"
                )
            if rule.failure_kind is not None and rule.failure_kind not in kinds:
                raise ValueError(
                    f"rules.{index}.failure_kind: {rule.failure_kind!r} is not a defined kind"
                )
        return self

    @property
    def purpose_slugs(self) -> tuple[str, ...]:
        return tuple(p.slug for p in self.purposes)

    @property
    def failure_kind_slugs(self) -> tuple[str, ...]:
        return tuple(k.slug for k in self.failure_kinds)

    def owners(self) -> PurposeOwners:
        """Who owns each purpose: its ``owner``, else the taxonomy's ``default_owner``."""
        return PurposeOwners(
            default=self.default_owner,
            owners={p.slug: p.owner for p in self.purposes if p.owner is not None},
        )

    def content_hash(self) -> str:
        """A stable fingerprint, stored with a trained model to tell which taxonomy it knew.

        Owners are left out: handing a purpose to another team teaches the model nothing, so
        it must not force a retrain (and models trained before owners existed keep theirs)."""
        ownership: Any = {"default_owner": True, "purposes": {"__all__": {"owner"}}}
        canonical = json.dumps(self.model_dump(mode="json", exclude=ownership), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_labels(cls, purposes: Iterable[str]) -> Taxonomy:
        """A bare taxonomy for when only labelled examples exist: the labels are the purposes."""
        return cls(purposes=tuple(PurposeDefinition(slug=p) for p in sorted(set(purposes))))


def _refuse_duplicates(field: str, slugs: list[str]) -> None:
    seen: set[str] = set()
    for slug in slugs:
        if slug in seen:
            raise ValueError(f"{field}: {slug!r} is defined twice")
        seen.add(slug)


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"  {where}: {problem['msg']}")
    return "\n".join(lines)


def load_taxonomy(path: Path | str) -> Taxonomy:
    """Read and check a taxonomy YAML file; raise ``TaxonomyError`` naming what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise TaxonomyError(f"{path}: cannot read the taxonomy: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{path}: the top level must be a mapping with 'purposes'")
    try:
        return Taxonomy.model_validate(raw)
    except ValidationError as exc:
        raise TaxonomyError(f"{path}: invalid taxonomy:\n{_describe(exc)}") from exc
    except ValueError as exc:  # raised while reshaping maps, before field validation
        raise TaxonomyError(f"{path}: invalid taxonomy: {exc}") from exc
