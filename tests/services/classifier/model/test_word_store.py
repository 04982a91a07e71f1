"""``WordStore``: each word analysed once, its row read back as analysed, through growth
(the arrays reallocated) and emptying (bounded), and a view taken before stays valid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.classifier.model.word_store import Analysis, WordStore, gather


def _row(word: str) -> tuple[list[int], list[float]]:
    columns = [ord(c) for c in word]
    return columns, [c / 2 for c in columns]


class _Analyser:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, words: Sequence[str]) -> list[Analysis]:
        self.seen.extend(words)
        return [_row(word) for word in words]


def _check(store: WordStore, words: list[str]) -> None:
    rows = store.lookup(words)
    columns, lengths = gather(rows.indptr, rows.columns, rows.words)
    values, _ = gather(rows.indptr, rows.values, rows.words)
    assert lengths.tolist() == [len(word) for word in words]
    expected = [_row(word) for word in words]
    assert columns.tolist() == [c for e in expected for c in e[0]]
    assert values.tolist() == [v for e in expected for v in e[1]]


def test_each_word_is_analysed_once_and_read_back_as_analysed() -> None:
    analyser = _Analyser()
    store = WordStore(analyser, np.int32, values=True, max_words=10_000)
    words = [f"w{i % 700}" + "x" * (i % 13) for i in range(3_000)]
    for start in range(0, len(words), 250):  # the arrays grow several times
        _check(store, words[start : start + 250])
    _check(store, words)
    _check(store, ["", "a", "", "w1"])
    assert len(analyser.seen) == len(set(analyser.seen)) == len(set(words) | {"", "a", "w1"})


def test_a_bounded_store_empties_and_still_answers_every_batch() -> None:
    analyser = _Analyser()
    store = WordStore(analyser, np.int32, values=True, max_words=5)
    _check(store, ["a", "b", "c"])
    _check(store, ["a", "d", "e", "f"])  # 6 words: emptied, this batch's 4 stored
    assert analyser.seen[-4:] == ["a", "d", "e", "f"]
    _check(store, list("abcdefghij"))  # a batch larger than the bound
    _check(store, [])


def test_a_view_taken_before_stays_what_it_was() -> None:
    store = WordStore(_Analyser(), np.int64, values=False, max_words=50)
    before = store.lookup(["one", "two", "one"])
    kept = gather(before.indptr, before.columns, before.words)[0].copy()
    for round_ in range(20):  # grows (new arrays), then empties
        store.lookup([f"n{round_}-{i}" * 3 for i in range(10)])
    again = gather(before.indptr, before.columns, before.words)[0]
    assert again.tolist() == kept.tolist()
    assert store.lookup(["one"]).version != before.version
