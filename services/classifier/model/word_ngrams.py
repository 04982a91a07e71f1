"""A faster ``transform`` for a fitted ``TfidfVectorizer(analyzer="word")`` of 1-2-grams.

scikit-learn analyses each text in Python: a list of n-gram strings, then a dict of counts
per text. Here a batch is tokenized with the vectorizer's own pattern (one ``findall`` per
text, in C) and every unigram and bigram is looked up in the vocabulary by ``map`` over the
whole batch, so no Python bytecode runs per token. The counts are the same integers, in the
same sorted CSR layout, and go through the vectorizer's own ``TfidfTransformer``: the matrix
is scikit-learn's, bit for bit (tests/services/classifier/model/test_word_ngrams.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain, islice, repeat

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from services.classifier.model.word_store import Analysis, WordStore, gather_texts

# Between two texts' tokens: never a vocabulary entry (the token pattern cannot match it), so
# the bigrams that straddle two texts are looked up and not found.
_BETWEEN = "\x00"

# Token patterns whose tokens are runs of word characters (and apostrophes) between word
# boundaries: never whitespace, so a text's tokens are its whitespace-split words' tokens.
_SPLIT_SAFE = frozenset({r"(?u)\b\w[\w']*\b", r"(?u)\b\w\w+\b"})


def supports(vectorizer: TfidfVectorizer) -> bool:
    """Whether ``WordNgrams`` reproduces this vectorizer's analysis exactly."""
    return (
        vectorizer.analyzer == "word"
        and vectorizer.input == "content"
        and vectorizer.preprocessor is None
        and vectorizer.tokenizer is None
        and vectorizer.stop_words is None
        and vectorizer.strip_accents is None
        and not vectorizer.binary
        and tuple(vectorizer.ngram_range) in ((1, 1), (1, 2))
        and re.compile(vectorizer.token_pattern).groups <= 1
        and re.compile(vectorizer.token_pattern).search(_BETWEEN) is None
    )


def _bigram_pairs(vocabulary: dict[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Every bigram of the vocabulary as (its two unigrams' columns as one sorted int64 key,
    its own column), when each bigram is two space-free tokens that are both unigrams of the
    vocabulary (always so for a vectorizer that kept every n-gram it saw; the token pattern
    here cannot match a space). Then a pair of tokens joined by a space is a bigram exactly
    when both are unigrams and their key is found, so the pairs need no string. None (look
    each joined pair up) otherwise."""
    width = len(vocabulary)
    keys, columns = [], []
    for term, column in vocabulary.items():
        parts = term.split(" ")
        if len(parts) == 1:
            continue
        if len(parts) != 2 or " ".join(parts) != term:
            return None
        left, right = vocabulary.get(parts[0]), vocabulary.get(parts[1])
        if left is None or right is None:
            return None
        keys.append(left * width + right)
        columns.append(column)
    order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
    known = np.asarray(keys, dtype=np.int64)[order]
    if len(known) == 0 or len(np.unique(known)) != len(known):
        return None
    return known, np.asarray(columns, dtype=np.int64)[order]


class WordNgrams:
    def __init__(self, vectorizer: TfidfVectorizer) -> None:
        if not supports(vectorizer):
            raise ValueError("only a fitted word 1-2-gram vectorizer without custom steps")
        self._vectorizer = vectorizer
        self._findall = re.compile(vectorizer.token_pattern).findall
        self._vocabulary: dict[str, int] = vectorizer.vocabulary_
        self._bigrams = tuple(vectorizer.ngram_range) == (1, 2)
        self._lowercase = bool(vectorizer.lowercase)
        self._dtype = vectorizer.dtype
        tfidf = vectorizer._tfidf
        # The transformer's own steps, done here without its input validation (a fixed
        # ~0.4 ms a call, most of a one-text batch's word block): only for the settings
        # whose steps are below; any other goes through the transformer itself.
        self._weights: np.ndarray | None = (
            np.asarray(tfidf.idf_) if tfidf.use_idf and tfidf.norm in ("l2", None) else None
        )
        self._sublinear = bool(tfidf.sublinear_tf)
        self._l2 = tfidf.norm == "l2"
        self._pairs = _bigram_pairs(self._vocabulary) if self._bigrams else None
        # Each whitespace-split word's tokens as unigram columns (-1: not a unigram), kept
        # per word: only for patterns whose tokens never hold whitespace and end at word
        # boundaries, so that a text's tokens are its words' tokens in order.
        self._store = (
            WordStore(self._token_columns, np.int64, values=False)
            if vectorizer.token_pattern in _SPLIT_SAFE
            and (self._pairs is not None or not self._bigrams)
            else None
        )

    @property
    def splits(self) -> bool:
        """Whether ``counts_of_words`` reads texts already split on whitespace."""
        return self._store is not None

    def _token_columns(self, words: Sequence[str]) -> list[Analysis]:
        get = self._vocabulary.get
        return [(list(map(get, self._findall(word), repeat(-1))), None) for word in words]

    def counts_of_words(self, split: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        """``counts`` of texts lowercased (``str.lower``) and split on whitespace, when
        ``splits``: each word's tokens from the ``WordStore`` (tokenized once per word), so
        no search of each text and no look-up per token."""
        if self._store is None:
            raise ValueError("this vectorizer's tokens are not read per whitespace-split word")
        unigrams, indptr = gather_texts(self._store, split)
        per_text = np.diff(indptr)
        owner = np.repeat(np.arange(len(split), dtype=np.int64), per_text)
        return self._matrix(unigrams, owner, len(split))

    def counts(self, texts: Sequence[str], *, lowered: bool = False) -> sparse.csr_matrix:
        """scikit-learn's count matrix: float, sorted indices, no duplicates. ``lowered``: the
        texts are already lowercase (``str.lower``, as the vectorizer's preprocessing)."""
        findall = self._findall
        documents = (t.lower() for t in texts) if self._lowercase and not lowered else iter(texts)
        tokenized = [findall(d) for d in documents]
        # One flat token list for the batch, a separator after each text.
        flat = list(chain.from_iterable(chain(t, (_BETWEEN,)) for t in tokenized))
        n = len(flat)
        lookup = self._vocabulary.get
        unigrams = np.fromiter(map(lookup, flat, repeat(-1)), dtype=np.int64, count=n)
        # The text each position belongs to (the separator belongs to the text before it).
        owner = np.repeat(
            np.arange(len(texts), dtype=np.int64),
            np.fromiter(map(len, tokenized), dtype=np.int64, count=len(texts)) + 1,
        )
        if self._pairs is not None or not self._bigrams or n < 2:
            return self._matrix(unigrams, owner, len(texts))
        pairs = map(" ".join, zip(flat, islice(flat, 1, None), strict=False))
        bigrams = np.fromiter(map(lookup, pairs, repeat(-1)), dtype=np.int64, count=n - 1)
        return self._sorted(
            np.concatenate([unigrams, bigrams]), np.concatenate([owner, owner[:-1]]), len(texts)
        )

    def _matrix(self, unigrams: np.ndarray, owner: np.ndarray, texts: int) -> sparse.csr_matrix:
        """The counts of a batch's tokens: ``unigrams`` their columns (-1: none) in order,
        ``owner`` each one's text. Bigrams by ``_pairs`` (two tokens of one text, both
        unigrams, their key found): no string per pair."""
        columns, owners = [unigrams], [owner]
        if self._bigrams and self._pairs is not None and len(unigrams) > 1:
            left, right = unigrams[:-1], unigrams[1:]
            both = np.flatnonzero((left >= 0) & (right >= 0) & (owner[:-1] == owner[1:]))
            keys = left[both] * len(self._vocabulary) + right[both]
            known, columns_of = self._pairs
            at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
            hit = known[at] == keys
            columns.append(columns_of[at[hit]])
            owners.append(owner[both[hit]])
        return self._sorted(np.concatenate(columns), np.concatenate(owners), texts)

    def _sorted(self, column: np.ndarray, row: np.ndarray, texts: int) -> sparse.csr_matrix:
        """The count matrix of entries (``row``, ``column``), -1 columns left out."""
        found = column >= 0
        column, row = column[found], row[found]
        order = np.argsort(row, kind="stable")
        column, row = column[order], row[order]
        indptr = np.zeros(texts + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=texts), out=indptr[1:])
        matrix = sparse.csr_matrix(
            (np.ones(len(column), dtype=self._dtype), column.astype(np.int32), indptr),
            shape=(texts, len(self._vocabulary)),
        )
        matrix.sum_duplicates()  # sorts each row's columns and adds repeated ones: the counts
        return matrix

    def transform(self, texts: Sequence[str], *, lowered: bool = False) -> sparse.csr_matrix:
        return self.weighted(self.counts(texts, lowered=lowered))

    def transform_words(self, split: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        """``transform`` of texts lowercased and split (``counts_of_words``)."""
        return self.weighted(self.counts_of_words(split))

    def weighted(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """The TF-IDF of a count matrix (changed in place), as the vectorizer's."""
        if self._weights is None or counts.dtype not in (np.float32, np.float64):
            result: sparse.csr_matrix = self._vectorizer._tfidf.transform(counts, copy=False)
            return result
        # ``TfidfTransformer.transform`` and ``normalize``'s steps, in their order, on the
        # same arrays: the same numbers.
        if self._sublinear:
            np.log(counts.data, counts.data)
            counts.data += 1.0
        counts.data *= self._weights[counts.indices]
        if self._l2:
            inplace_csr_row_normalize_l2(counts)
        return counts
