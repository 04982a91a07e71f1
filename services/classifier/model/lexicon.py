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
from itertools import compress, count, repeat
from operator import contains

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


def _straight(text: str) -> str:
    """``text.translate(_APOSTROPHES)``: one C scan per character replaced, where
    ``translate`` with a mapping looked characters up one by one (1.5 µs a demand)."""
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")


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
_RUN_SPLIT = re.compile(r"([\w']+)")
_BETWEEN = "\x00"
"""Between two texts in a batch's one search for runs (``CueCounter._count_keyed``)."""


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
        groups = len(self.group_names)
        keys: list[frozenset[str] | None] = self.__dict__.get("_keys") or [None] * groups
        lowered = [text.lower() for text in texts]
        # Lowercased text by text, as before (a text's own context); the apostrophes made
        # one by three ``replace`` of the joined batch (``translate`` per text cost more).
        joined = _straight(_BETWEEN.join(lowered))
        hits = np.zeros((len(texts), groups), dtype=np.int64)
        self._count_keyed(joined, [len(text) for text in lowered], keys, hits)
        everywhere = [c for c, needed in enumerate(keys) if needed is None]
        if everywhere:  # searched in each text
            straight = [_straight(text) for text in lowered]
            for column in everywhere:
                findall = self._patterns[column].findall
                hits[:, column] = [len(findall(text)) for text in straight]
        rows = np.zeros((len(texts), groups + 2), dtype=np.float32)
        # log1p of each count as Python's math.log1p gives it, rounded to float32 as the
        # conversion of a list of floats does (numpy's own log1p may differ in the last bit).
        table = np.array([math.log1p(n) for n in range(int(hits.max(initial=0)) + 1)])
        rows[:, :groups] = table[hits]
        # Whole-matrix numpy, not per row: per-row fancy indexing cost more than the regexes.
        rows[:, -2] = np.log1p(rows[:, failure_groups].sum(axis=1))
        rows[:, -1] = np.fromiter(map(contains, texts, repeat("!")), bool, len(texts))
        return rows

    def _count_keyed(
        self,
        joined: str,
        lengths: Sequence[int],
        keys: Sequence[frozenset[str] | None],
        hits: np.ndarray,
    ) -> None:
        """Each keyed group's matches in each text (``hits``, texts x groups, added to), for
        a whole batch at once. ``joined``: the batch's texts, lowercased, apostrophes
        straightened, joined by ``_BETWEEN``; ``lengths``: each text's length in it.

        Where a keyed group's match can start is a run whose key is one of its phrases'
        (``first_word_keys``), and its pattern is tried there only, in order, resuming after
        each match (what ``findall`` finds, since it finds nothing in between). The runs of
        every text come from one search of ``joined`` and are looked up by ``map``: no
        bytecode per word, only per run that can start a cue. A match never spans
        ``_BETWEEN`` (no phrase contains it, and it is neither whitespace nor a word
        character or apostrophe, so the look-arounds see it as they see a text's end), so
        each text's matches are what a search of that text alone finds."""
        by_key = self._by_key(keys)
        if not by_key or not lengths:
            return
        # The texts' runs at odd places, the text between them at even ones (one C call).
        pieces = _RUN_SPLIT.split(joined)
        runs = pieces[1::2]
        starting = list(map(by_key.get, runs))
        if "'" in joined:  # a run's key is the run without its apostrophes
            for index in compress(count(), map(contains, runs, repeat("'"))):
                starting[index] = by_key.get(runs[index].replace("'", ""))
        candidates = list(compress(count(), starting))
        if not candidates:
            return
        # A run starts where the pieces before it end.
        ends = np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)))
        at: dict[int, list[int]] = {}
        for index, position in zip(
            candidates, ends[np.asarray(candidates) * 2].tolist(), strict=True
        ):
            for column in starting[index] or ():
                at.setdefault(column, []).append(position)
        # Where each text starts in ``joined``, to give each match its text.
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(np.asarray(lengths[:-1], dtype=np.int64) + 1, out=starts[1:])
        for column, positions in at.items():
            match, found, end = self._patterns[column].match, [], 0
            for position in positions:
                if position >= end:
                    matched = match(joined, position)
                    if matched is not None:
                        found.append(position)
                        end = matched.end()
            if found:
                owners = np.searchsorted(starts, found, side="right") - 1
                hits[:, column] += np.bincount(owners, minlength=len(lengths))

    def _by_key(self, keys: Sequence[frozenset[str] | None]) -> dict[str, tuple[int, ...]]:
        """The keyed groups (their columns) each run key can start, for ``keys``; kept
        while ``keys`` is the same list (not pickled: see ``__getstate__``)."""
        kept = self.__dict__.get("_by_key_of")
        if kept is not None and kept[0] is keys:
            by_key: dict[str, tuple[int, ...]] = kept[1]
            return by_key
        lists: dict[str, list[int]] = {}
        for column, needed in enumerate(keys):
            for key in needed or ():
                lists.setdefault(key, []).append(column)
        by_key = {key: tuple(columns) for key, columns in lists.items()}
        if any(_BETWEEN in p.pattern for p in self._patterns):
            by_key = {}  # never with real phrases; every group then searched text by text
        self.__dict__["_by_key_of"] = (keys, by_key)
        return by_key

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_by_key_of", None)  # derived; a saved counter's bytes stay as before
        return state
