"""Domain-independent cues of failure demand (and of plain requests), as model features.

A model trained on one organisation's examples learns its purposes' words ("bill", "engineer").
The way people chase, repeat themselves, say something went wrong or pass their verdict on
the service is the same in a bank, a telco or a council, so these cue counts carry the
value/failure signal to domains the training data never saw. An organisation's taxonomy can
add phrases to each failure kind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from itertools import chain, repeat
from operator import contains

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from services.classifier.model.word_store import Analysis, WordStore, gather

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
    # The customer's verdict that the service failed them, in several registers (formal,
    # spoken, online): on real customer text (TWCS first contacts) the failure the model
    # missed was mostly in such a verdict, not in chasing or repeat phrases. Written from
    # that definition before any development tweet was read; phrases already in "complaint"
    # are not repeated. Left out because a sector of the corpus uses them for plain value
    # demand: rubbish / garbage / trash (waste collection), robbed / thieves / scam (fraud
    # reports), poor (a first "poor signal" report), waste, hate, crazy, insane. Then, on
    # the corpus's first 2,554 rows, seed_examples.csv and the council examples: no phrase
    # here matches (``compile_cues``) a value row unless it matches more failure rows; "fix
    # it", "do better" and "unhappy" did ("can you fix it", "can you do better on the
    # price") and were dropped, as was "so much for" ("thank you so much for"). No emoji: a
    # phrase that does not start with a word character makes its group searched in every
    # text (``first_word_keys``). Last, so the columns of the groups before it keep their
    # places.
    "verdict": (
        # the verdict
        "worst",
        "worse",
        "pathetic",
        "disgrace",
        "shameful",
        "shame on you",
        "outrageous",
        "scandalous",
        "absurd",
        "laughable",
        "farce",
        "shambles",
        "shambolic",
        "horrible",
        "horrendous",
        "dreadful",
        "abysmal",
        "atrocious",
        "diabolical",
        "lousy",
        "shoddy",
        "crap",
        "crappy",
        "shit",
        "shite",
        "shitty",
        "hopeless",
        "nightmare",
        "incompetent",
        "incompetence",
        "unprofessional",
        "clueless",
        "inexcusable",
        "unbelievable",
        "embarrassing",
        "embarrassment",
        "disappointing",
        "not good enough",
        "not acceptable",
        "rip off",
        "rip-off",
        "ripoff",
        "daylight robbery",
        "sucks",
        "suck",
        "sucked",
        "epic fail",
        "what a fail",
        "waste of time",
        "waste of money",
        # the customer's state, because of the service
        "fuming",
        "livid",
        "raging",
        "pissed",
        "annoyed",
        "not happy",
        "not impressed",
        "sick and tired",
        "had enough",
        "enough is enough",
        "last straw",
        "let down",
        "let me down",
        "let us down",
        "fobbed off",
        "never again",
        "lost a customer",
        "wtf",
        "ffs",
        "smh",
        "ugh",
        "seriously",
        # sarcasm that carries a verdict
        "thanks for nothing",
        "gotta love",
        "got to love",
        "yeah right",
        # the demand that they put it right
        "fix this",
        "fix your",
        "sort it out",
        "sort this out",
        "sort yourselves out",
        "get it together",
        "get your act together",
        "do your job",
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


def _starts(by_key: Mapping[str, tuple[int, ...]], words: Sequence[str]) -> list[Analysis]:
    """Each lowercased word's runs that can start a keyed group: the group's column and the
    run's offset in the word, in order."""
    found: list[Analysis] = []
    for word in words:
        columns: list[int] = []
        offsets: list[float] = []
        for run in _RUN.finditer(_straight(word)):
            for column in by_key.get(run.group().replace("'", ""), ()):
                columns.append(column)
                offsets.append(run.start())
        found.append((columns, offsets))
    return found


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
        """Take ``other``'s search keys if it has each of this counter's groups, by name,
        with the same phrases (a counter unpickled from a model saved before the keys
        existed has none: it searches every group, correctly but slower). ``other`` may have
        more groups: the lexicon has grown since (``verdict``), and an old model keeps its
        own groups, so its feature columns stay as it was trained. The patterns'
        alternatives are compared as sets: their order among phrases of one length follows
        the set order of the process that built them."""

        def alternatives(pattern: re.Pattern[str]) -> list[str] | None:
            text = pattern.pattern
            if not (text.startswith(_OPEN) and text.endswith(_CLOSE)) or "\\|" in text:
                return None
            return sorted(text[len(_OPEN) : -len(_CLOSE)].split("|"))

        theirs = {
            name: (alternatives(pattern), key)
            for name, pattern, key in zip(
                other.group_names, other._patterns, other._keys, strict=True
            )
        }
        for name, pattern in zip(self.group_names, self._patterns, strict=True):
            mine = alternatives(pattern)
            if mine is None or name not in theirs or theirs[name][0] != mine:
                return False
        self._keys = [theirs[name][1] for name in self.group_names]
        return True

    @property
    def feature_names(self) -> list[str]:
        return [f"cue:{name}" for name in self.group_names] + ["cue:any_failure", "cue:exclaim"]

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return sparse.csr_matrix(self.rows(texts))

    def rows(
        self, texts: Sequence[str], split: Sequence[Sequence[str]] | None = None
    ) -> np.ndarray:
        """``transform`` as a dense float32 array (texts x ``feature_names``). ``split``: the
        texts lowercased (``str.lower``) and split on whitespace, when the caller has them."""
        failure_groups = [i for i, n in enumerate(self.group_names) if n != "request"]
        groups = len(self.group_names)
        keys: list[frozenset[str] | None] = self.__dict__.get("_keys") or [None] * groups
        if split is None:
            split = [text.lower().split() for text in texts]
        hits = np.zeros((len(texts), groups), dtype=np.int64)
        self._count_keyed(split, keys, hits)
        everywhere = [c for c, needed in enumerate(keys) if needed is None]
        if everywhere:  # searched in each text
            straight = [_straight(text.lower()) for text in texts]
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
        split: Sequence[Sequence[str]],
        keys: Sequence[frozenset[str] | None],
        hits: np.ndarray,
    ) -> None:
        r"""Each keyed group's matches in each text (``hits``, texts x groups, added to), for
        a whole batch at once, from its texts lowercased and split on whitespace.

        Where a keyed group's match can start is a run whose key is one of its phrases'
        (``first_word_keys``), and its pattern is tried there only, in order, resuming after
        each match (what ``findall`` finds, since it finds nothing in between). Runs never
        hold whitespace, so a text's runs are its words' runs: each word's runs that can
        start a group (group, offset) are kept in a ``WordStore``, and a batch's words are
        looked up by ``map``, with no bytecode per word. The patterns are tried on the texts
        with each whitespace run made one space (a phrase's words are joined by ``\s+``,
        which then matches as before; the look-arounds see a space as they see any
        whitespace or the text's ends), joined by ``_BETWEEN``: no match spans it (no
        phrase contains it, and it is neither whitespace nor a word character or
        apostrophe, so the look-arounds see it as they see a text's end)."""
        kept = self._by_key(keys)
        if kept is None or not split:
            return
        store = kept[2]
        flat = list(chain.from_iterable(split))
        rows = store.lookup(flat)
        columns, found = gather(rows.indptr, rows.columns, rows.words)
        if not len(columns):
            return
        offsets = gather(rows.indptr, rows.values, rows.words)[0].astype(np.int64)
        # Where each word starts in the joined texts: each word and the one character after
        # it (a space, or ``_BETWEEN`` after a text's last word; an empty text is just that).
        counts = np.fromiter(map(len, split), np.int64, len(split))
        words_at = np.zeros(len(split) + 1, dtype=np.int64)
        np.cumsum(counts, out=words_at[1:])
        before = np.zeros(len(flat) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, flat), np.int64, len(flat)) + 1, out=before[1:])
        lengths = before[words_at[1:]] - before[words_at[:-1]] - (counts > 0)
        starts = np.zeros(len(split), dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
        owner = np.repeat(np.arange(len(split), dtype=np.int64), counts)
        word_at = starts[owner] + before[:-1] - before[words_at[:-1]][owner]
        positions = word_at[np.repeat(np.arange(len(flat)), found)] + offsets
        order = np.argsort(columns, kind="stable")  # by group, each in text order
        columns, positions = columns[order], positions[order]
        cut = np.flatnonzero(np.diff(columns)) + 1
        joined = _straight(_BETWEEN.join(map(" ".join, split)))
        for column, at in zip(
            columns[np.concatenate([[0], cut])].tolist(), np.split(positions, cut), strict=True
        ):
            match, matched_at, end = self._patterns[column].match, [], 0
            for position in at.tolist():
                if position >= end:
                    matched = match(joined, position)
                    if matched is not None:
                        matched_at.append(position)
                        end = matched.end()
            if matched_at:
                texts = np.searchsorted(starts, matched_at, side="right") - 1
                hits[:, column] += np.bincount(texts, minlength=len(split))

    def _by_key(
        self, keys: Sequence[frozenset[str] | None]
    ) -> tuple[object, dict[str, tuple[int, ...]], WordStore] | None:
        """For ``keys``: the keyed groups (their columns) each run key can start, and the
        store of each word's runs that can start one; kept while ``keys`` is the same list
        (not pickled: see ``__getstate__``). None: no keyed group."""
        kept = self.__dict__.get("_by_key_of")
        if kept is not None and kept[0] is keys:
            return kept[1]  # type: ignore[no-any-return]
        lists: dict[str, list[int]] = {}
        for column, needed in enumerate(keys):
            for key in needed or ():
                lists.setdefault(key, []).append(column)
        by_key = {key: tuple(columns) for key, columns in lists.items()}
        made = None
        if by_key and not any(_BETWEEN in p.pattern for p in self._patterns):
            made = (keys, by_key, WordStore(partial(_starts, by_key), np.int64, values=True))
        self.__dict__["_by_key_of"] = (keys, made)
        return made

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_by_key_of", None)  # derived; a saved counter's bytes stay as before
        return state
