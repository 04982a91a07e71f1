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

# Between two texts' tokens: never a vocabulary entry (the token pattern cannot match it), so
# the bigrams that straddle two texts are looked up and not found.
_BETWEEN = "\x00"


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
        columns = [unigrams]
        owners = [owner]
        if self._bigrams and n > 1:
            pairs = map(" ".join, zip(flat, islice(flat, 1, None), strict=False))
            columns.append(np.fromiter(map(lookup, pairs, repeat(-1)), dtype=np.int64, count=n - 1))
            owners.append(owner[:-1])
        column = np.concatenate(columns)
        row = np.concatenate(owners)
        found = column >= 0
        column, row = column[found], row[found]
        order = np.argsort(row, kind="stable")
        column, row = column[order], row[order]
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=len(texts)), out=indptr[1:])
        matrix = sparse.csr_matrix(
            (np.ones(len(column), dtype=self._dtype), column.astype(np.int32), indptr),
            shape=(len(texts), len(self._vocabulary)),
        )
        matrix.sum_duplicates()  # sorts each row's columns and adds repeated ones: the counts
        return matrix

    def transform(self, texts: Sequence[str], *, lowered: bool = False) -> sparse.csr_matrix:
        counts = self.counts(texts, lowered=lowered)
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
