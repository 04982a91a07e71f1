"""Each distinct word's analysis (its char n-gram counts, its embedding token ids) kept once,
in flat growing arrays, so that a batch's words are found by one ``map`` over the batch and
their rows read by numpy: no Python per word once a word is known.

Before, each batch listed its distinct words, fetched each one's pair of small arrays from a
dict in a comprehension and concatenated them (about 3 µs a text at 1,000 texts a batch, and
a fixed part of every small batch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from itertools import chain, compress, count, repeat
from typing import NamedTuple

import numpy as np

Analysis = tuple[Sequence[int], Sequence[float] | None]
"""A word's row: its columns, and their values when the store keeps values."""


class Rows(NamedTuple):
    """A batch's words in a ``WordStore``, and the store's rows (CSR arrays) when read."""

    words: np.ndarray
    """Each word's row number (int32)."""
    indptr: np.ndarray
    columns: np.ndarray
    values: np.ndarray
    version: int


class WordStore:
    """Rows of ``columns`` (and, if kept, ``values``) per word, as CSR arrays: word ``i``'s
    row is ``columns[indptr[i]:indptr[i + 1]]``. ``analyse`` gives new words' rows. At most
    ``max_words`` words (then emptied: bounded memory; a batch's words come straight back).
    """

    def __init__(
        self,
        analyse: Callable[[Sequence[str]], Sequence[Analysis]],
        column_dtype: type[np.integer],
        *,
        values: bool,
        max_words: int = 200_000,
    ) -> None:
        self._analyse = analyse
        self._column_dtype = column_dtype
        self._keeps_values = values
        self._max_words = max_words
        self._lock = threading.Lock()
        self.version = 0
        """Changes whenever rows are added or the store emptied."""
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str, int] = {}
        self._indptr = np.zeros(1024, dtype=np.int32)
        self._columns = np.zeros(4096, dtype=self._column_dtype)
        self._values = np.zeros(4096 if self._keeps_values else 0, dtype=np.float64)
        self._filled = 0  # values stored
        self.version += 1

    def lookup(self, words: Sequence[str]) -> Rows:
        """Each word's row number, analysing the words not stored yet, and the store's
        arrays as they are then: a consistent view (the store is shared by threads, a
        training and the stream's predictions; adding or emptying makes new arrays or writes
        past the view's end, so a view taken stays valid)."""
        with self._lock:
            found = np.fromiter(
                map(self._index.get, words, repeat(-1)), dtype=np.int32, count=len(words)
            )
            if len(found) and found.min() < 0:
                new = list(dict.fromkeys(compress(words, (found < 0).tolist())))
                if len(self._index) + len(new) > self._max_words:
                    self._clear()
                    new = list(dict.fromkeys(words))
                self._add(new)
                found = np.fromiter(map(self._index.__getitem__, words), np.int32, len(words))
            size = len(self._index)
            return Rows(
                found,
                self._indptr[: size + 1],
                self._columns[: self._filled],
                self._values[: self._filled],
                self.version,
            )

    def _add(self, words: Sequence[str]) -> None:
        rows = self._analyse(words)
        # Plain sequences per word, made into arrays once for all of them (an array a word
        # cost about a microsecond each, per store, for every new word).
        lengths = np.fromiter(map(len, (row[0] for row in rows)), np.int64, len(rows))
        start, at = len(self._index), self._filled
        end = at + int(lengths.sum())
        self._indptr = _room(self._indptr, start + len(rows) + 1)
        self._columns = _room(self._columns, end)
        self._columns[at:end] = np.fromiter(
            chain.from_iterable(row[0] for row in rows), self._columns.dtype, end - at
        )
        if self._keeps_values:
            self._values = _room(self._values, end)
            self._values[at:end] = np.fromiter(
                chain.from_iterable(row[1] or () for row in rows), np.float64, end - at
            )
        np.cumsum(lengths, out=self._indptr[start + 1 : start + len(rows) + 1])
        self._indptr[start + 1 : start + len(rows) + 1] += at
        for number, word in zip(count(start), words, strict=False):
            self._index[word] = number
        self._filled = end
        self.version += 1


def _room(array: np.ndarray, size: int) -> np.ndarray:
    """``array``, or a copy twice as large when it has fewer than ``size`` places."""
    if len(array) >= size:
        return array
    larger = np.zeros(max(size, 2 * len(array)), dtype=array.dtype)
    larger[: len(array)] = array
    return larger


def gather(indptr: np.ndarray, flat: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concatenation of ``rows``' pieces of ``flat`` (CSR ``indptr``), in order, and each
    row's length."""
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - starts
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    positions = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
    return flat[positions], lengths


def gather_texts(store: WordStore, split: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's words' stored columns, in order (``split``: each text's words), and the
    CSR row pointer of the texts over them: the words looked up once, read by numpy."""
    flat = list(chain.from_iterable(split))
    rows = store.lookup(flat)
    columns, lengths = gather(rows.indptr, rows.columns, rows.words)
    words_at = np.zeros(len(split) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, split), np.int64, count=len(split)), out=words_at[1:])
    columns_at = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(lengths, out=columns_at[1:])
    return columns, columns_at[words_at]
