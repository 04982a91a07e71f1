import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from services.classifier.config import SEED_EXAMPLES
from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.examples import read_examples_csv

ODD = [
    "a",
    "I",
    "ok  ok\tok\n\nok",
    "Ça ne marche PAS !!!",
    "x" * 30,
    "   ",
    "top-up failed: £20.00 (again)",
    "where's my card? it's been 2 weeks",
]


@pytest.mark.parametrize("ngram_range", [(2, 5), (1, 3), (3, 5)])
def test_same_matrix_as_scikit_learn(ngram_range: tuple[int, int]) -> None:
    texts = [e.text for e in read_examples_csv(SEED_EXAMPLES).examples]
    vectorizer = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=ngram_range,
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
    ).fit(texts[:400])
    unseen = texts[400:] + ODD
    fast = CachedCharNgrams(vectorizer)

    expected = vectorizer.transform(unseen)
    first = fast.transform(unseen)
    cached = fast.transform(unseen)  # second pass: every word from the cache

    for got in (first, cached):
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype
        assert abs(got - expected).max() < 1e-6
        assert got.nnz == expected.nnz


def test_a_bounded_cache_gives_the_same_answer() -> None:
    texts = [e.text for e in read_examples_csv(SEED_EXAMPLES).examples][:200]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).fit(texts)
    tiny = CachedCharNgrams(vectorizer, max_words=5)

    assert abs(tiny.transform(texts) - vectorizer.transform(texts)).max() < 1e-6
