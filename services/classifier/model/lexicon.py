"""Domain-independent cues of failure demand (and of plain requests), as model features.

A model trained on one organisation's examples learns its purposes' words ("bill", "engineer").
The way people chase, repeat themselves or say something went wrong is the same in a bank, a
telco or a council, so these cue counts carry the value/failure signal to domains the training
data never saw. An organisation's taxonomy can add phrases to each failure kind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

# Each cue group is a list of phrases matched as whole words in lowercased text, with
# apostrophes optional ("didn't" also matches "didnt").
CUE_GROUPS: dict[str, tuple[str, ...]] = {
    "progress_chasing": (
        "still",
        "yet",
        "where is",
        "where's",
        "where are",
        "any update",
        "an update",
        "update on",
        "chase",
        "chasing",
        "how long",
        "how much longer",
        "when will",
        "when is",
        "waiting",
        "waited",
        "weeks",
        "days ago",
        "months",
        "no reply",
        "no response",
        "not heard",
        "heard nothing",
        "no news",
        "nobody",
        "no one",
        "not arrived",
        "hasn't arrived",
        "haven't received",
        "not received",
        "overdue",
        "follow up",
        "following up",
        "chased",
        "status of",
        "progress",
    ),
    "repeat": (
        "again",
        "third time",
        "second time",
        "fourth time",
        "already",
        "before",
        "last time",
        "every time",
        "keep having to",
        "told you",
        "told them",
        "explained",
        "same problem",
        "same issue",
        "once more",
        "yet again",
        "multiple times",
        "several times",
        "so many times",
        "rang",
        "called",
        "phoned",
        "emailed",
        "spoke to",
        "last week",
        "yesterday",
    ),
    "not_done": (
        "didn't",
        "did not",
        "hasn't",
        "has not",
        "haven't",
        "have not",
        "wasn't",
        "weren't",
        "never",
        "not been",
        "no show",
        "didn't turn up",
        "didn't come",
        "no-one came",
        "forgot",
        "missed",
        "promised",
        "supposed to",
        "meant to",
        "should have",
        "should've",
        "said you would",
        "said they would",
        "assured",
        "was told",
        "were told",
        "still not",
        "ignored",
        "no call back",
        "call back",
    ),
    "not_done_right": (
        "wrong",
        "incorrect",
        "mistake",
        "error",
        "broken",
        "not working",
        "doesn't work",
        "isn't working",
        "stopped working",
        "won't",
        "can't",
        "faulty",
        "not fixed",
        "double charged",
        "charged twice",
        "taken twice",
        "overcharged",
        "shouldn't",
        "keeps",
        "problem",
        "issue",
        "fault",
        "failed",
        "declined",
        "missing",
        "lost",
        "damaged",
    ),
    "not_understood": (
        "don't understand",
        "do not understand",
        "doesn't make sense",
        "makes no sense",
        "confusing",
        "confused",
        "unclear",
        "what does this mean",
        "what does it mean",
        "no idea why",
        "can't make sense",
        "not sure why",
        "why has",
        "why have",
        "why is",
        "why was",
        "why did",
        "explain why",
        "what is this",
    ),
    "complaint": (
        "complaint",
        "complain",
        "unacceptable",
        "ridiculous",
        "disgusting",
        "appalling",
        "disgraceful",
        "fed up",
        "sick of",
        "frustrated",
        "frustrating",
        "furious",
        "angry",
        "terrible",
        "useless",
        "awful",
        "shocking",
        "joke",
        "escalate",
        "manager",
        "compensation",
        "ombudsman",
        "disappointed",
        "poor service",
    ),
    "request": (
        "i would like",
        "i'd like",
        "i want to",
        "can i",
        "could i",
        "how do i",
        "how can i",
        "is it possible",
        "i need to",
        "please",
        "set up",
        "sign up",
        "interested in",
        "looking to",
        "thinking of",
        "can you tell me",
        "what are",
        "do you offer",
        "new",
        "add",
        "open",
        "apply",
        "book",
        "order",
        "upgrade",
        "quote",
    ),
}

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def _phrase_pattern(phrase: str) -> str:
    words = phrase.lower().translate(_APOSTROPHES).split()
    escaped = [re.escape(word).replace("'", "'?") for word in words]
    return r"\s+".join(escaped)


_OPEN = r"(?<![\w'])(?:"
_CLOSE = r")(?![\w'])"


def compile_cues(phrases: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted({p for p in phrases if p.strip()}, key=len, reverse=True)
    alternatives = "|".join(_phrase_pattern(p) for p in ordered)
    return re.compile(_OPEN + alternatives + _CLOSE)


_RUN = re.compile(r"[\w']+")


def first_word_keys(phrases: Iterable[str]) -> frozenset[str] | None:
    """What a text must contain for one of ``phrases`` to match: a pattern can only match
    where a run of word characters and apostrophes starts (its look-behind), and that run is
    then the leading run of the phrase's first word, apostrophes aside (they are optional).
    So a group of phrases none of whose keys is among a text's runs (apostrophes removed)
    has no match there. None: a phrase that starts with another character; always search."""
    keys = set()
    for phrase in phrases:
        words = phrase.lower().translate(_APOSTROPHES).split()
        if not words:
            continue
        run = _RUN.match(words[0])
        key = run.group().replace("'", "") if run else ""
        if not key:
            return None
        keys.add(key)
    return frozenset(keys) if keys else None  # no phrase: the empty pattern matches anywhere


class CueCounter:
    """Counts each cue group's phrases in each text: a small, dense, domain-free feature block."""

    def __init__(self, extra: Mapping[str, Sequence[str]] | None = None) -> None:
        groups = {name: list(phrases) for name, phrases in CUE_GROUPS.items()}
        for name, phrases in (extra or {}).items():
            groups.setdefault(name, []).extend(phrases)
        self.group_names: tuple[str, ...] = tuple(groups)
        self._patterns = [compile_cues(groups[name]) for name in self.group_names]
        self._keys = [first_word_keys(groups[name]) for name in self.group_names]

    def adopt_keys(self, other: CueCounter) -> bool:
        """Take ``other``'s search keys if it has the same phrases in each group (a counter
        unpickled from a model saved before the keys existed has none: it searches every
        group, correctly but slower). The patterns' alternatives are compared as sets: their
        order among phrases of one length follows the set order of the process that built
        them."""

        def alternatives(pattern: re.Pattern[str]) -> list[str] | None:
            text = pattern.pattern
            if not (text.startswith(_OPEN) and text.endswith(_CLOSE)) or "\\|" in text:
                return None
            return sorted(text[len(_OPEN) : -len(_CLOSE)].split("|"))

        ours = [alternatives(p) for p in self._patterns]
        if (
            other.group_names != self.group_names
            or None in ours
            or ours != [alternatives(p) for p in other._patterns]
        ):
            return False
        self._keys = list(other._keys)
        return True

    @property
    def feature_names(self) -> list[str]:
        return [f"cue:{name}" for name in self.group_names] + ["cue:any_failure", "cue:exclaim"]

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return sparse.csr_matrix(self.rows(texts))

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        """``transform`` as a dense float32 array (texts x ``feature_names``)."""
        failure_groups = [i for i, n in enumerate(self.group_names) if n != "request"]
        width = len(self.group_names) + 2
        keys: list[frozenset[str] | None] = self.__dict__.get("_keys") or [None] * (width - 2)
        # Where a keyed group's match can start: the runs whose key is one of its phrases'
        # (first_word_keys). Its pattern is tried there only, in order, resuming after each
        # match, which is what findall does, since it finds nothing in between.
        by_key: dict[str, list[int]] = {}
        for column, needed in enumerate(keys):
            for key in needed or ():
                by_key.setdefault(key, []).append(column)
        patterns = self._patterns
        everywhere = [
            (c, p) for c, (p, k) in enumerate(zip(patterns, keys, strict=True)) if k is None
        ]
        values: list[float] = [0.0] * (len(texts) * width)  # filled as a list: one copy in
        at = 0
        for text in texts:
            lowered = text.lower().translate(_APOSTROPHES)
            starts: dict[int, list[int]] = {}
            for run in _RUN.finditer(lowered):
                for column in by_key.get(run.group().replace("'", ""), ()):
                    starts.setdefault(column, []).append(run.start())
            for column, positions in starts.items():
                pattern, hits, end = patterns[column], 0, 0
                for position in positions:
                    if position >= end:
                        found = pattern.match(lowered, position)
                        if found is not None:
                            hits += 1
                            end = found.end()
                values[at + column] = math.log1p(hits) if hits else 0.0
            for column, pattern in everywhere:
                hits = len(pattern.findall(lowered))
                if hits:
                    values[at + column] = math.log1p(hits)
            values[at + width - 1] = 1.0 if "!" in text or "?!" in text else 0.0
            at += width
        rows = np.array(values, dtype=np.float32).reshape(len(texts), width)
        # Whole-matrix numpy, not per row: per-row fancy indexing cost more than the regexes.
        rows[:, -2] = np.log1p(rows[:, failure_groups].sum(axis=1))
        return rows
