"""An organisation's explicit overrides: phrases that decide a demand's labels outright."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.classifier.taxonomy import Rule, Taxonomy
from shared.events.classification import DemandType


@dataclass(frozen=True, slots=True)
class RuleMatch:
    phrase: str
    purpose: str | None
    demand_type: DemandType | None
    failure_kind: str | None


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(word) for word in phrase.lower().split()]
    # Whole words only, so "leave" never fires inside "sleeve"; any whitespace between words.
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)")


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    patterns: tuple[tuple[str, re.Pattern[str]], ...]


class RuleSet:
    """Rules are checked in the taxonomy's order; the first one whose phrase appears wins."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self._rules = tuple(
            _CompiledRule(rule, tuple((p, _phrase_pattern(p)) for p in rule.when_any))
            for rule in rules
        )
        # Most texts match no rule, and a phrase can only match where its first word is a
        # substring: `in` says so far faster than the patterns' searches (their whole-word
        # look-behind defeats the regex engine's own literal scan).
        self._first_words = tuple(
            {phrase.lower().split()[0] for c in self._rules for phrase, _ in c.patterns}
        )

    @classmethod
    def from_taxonomy(cls, taxonomy: Taxonomy | None) -> RuleSet:
        return cls(taxonomy.rules if taxonomy else ())

    def __len__(self) -> int:
        return len(self._rules)

    def match(self, text: str) -> RuleMatch | None:
        lowered = text.lower().replace("\u2019", "'")
        if not any(word in lowered for word in self._first_words):
            return None
        for compiled in self._rules:
            for phrase, pattern in compiled.patterns:
                if pattern.search(lowered):
                    rule = compiled.rule
                    return RuleMatch(phrase, rule.purpose, rule.demand_type, rule.failure_kind)
        return None
