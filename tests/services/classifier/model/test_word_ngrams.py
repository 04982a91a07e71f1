import numpy as np
import pytest
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer

from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES
from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.examples import read_examples_csv
from services.classifier.model.word_ngrams import WordNgrams, supports

ODD = [
    "",
    "a",
    "I",
    "ok  ok\tok\n\nok",
    "Ça ne marche PAS !!!",
    "don't-know what's 'quoted' here",
    "x" * 30,
    "   ",
    "top-up failed: £20.00 (again) again again",
    "where's my card? it's been 2 weeks",
    "ΣΟΦΟΣ ÏSTANBUL",
]


def _texts() -> list[str]:
    return [e.text for e in read_examples_csv(SEED_EXAMPLES).examples] + [
        e.text for e in read_examples_csv(GENERAL_CORPUS).examples[:600]
    ]


@pytest.mark.parametrize(
    ("ngram_range", "token_pattern", "max_df", "splits"),
    [
        ((1, 2), r"(?u)\b\w[\w']*\b", 1.0, True),
        ((1, 1), r"(?u)\b\w[\w']*\b", 1.0, True),
        ((1, 2), r"(?u)\b\w\w+\b", 1.0, True),
        # common unigrams dropped while their bigrams stay: bigrams looked up as strings
        ((1, 2), r"(?u)\b\w[\w']*\b", 0.05, False),
        ((1, 2), r"(?u)\b\w+(?: \w+)?\b", 1.0, False),  # tokens spanning two words
    ],
)
def test_the_same_matrix_as_scikit_learn_bit_for_bit(
    ngram_range: tuple[int, int], token_pattern: str, max_df: float, splits: bool
) -> None:
    texts = _texts()
    vectorizer = TfidfVectorizer(
        analyzer="word",
        ngram_range=ngram_range,
        sublinear_tf=True,
        token_pattern=token_pattern,
        max_df=max_df,
        dtype=np.float32,
    ).fit(texts[:500])
    unseen = texts[500:] + ODD + ["the bill the bill", "x\x00y bill", "a b\u00a0c d"]
    fast = WordNgrams(vectorizer)
    assert fast.splits is splits

    expected = vectorizer.transform(unseen)
    lowered = [t.lower() for t in unseen]
    got_all = [fast.transform(unseen), fast.transform(lowered, lowered=True)]
    if splits:  # twice: the words analysed, then from the store
        got_all += [fast.transform_words([t.split() for t in lowered]) for _ in range(2)]
        for size in (1, 7):
            pieces = [
                fast.transform_words([t.split() for t in lowered[at : at + size]])
                for at in range(0, len(lowered), size)
            ]
            got_all.append(sparse.vstack(pieces, format="csr"))
    for got in got_all:
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert np.array_equal(got.indptr, expected.indptr)
        assert np.array_equal(got.indices, expected.indices)
        assert np.array_equal(got.data, expected.data)


def test_only_vectorizers_it_reproduces_are_taken() -> None:
    assert not supports(TfidfVectorizer(ngram_range=(1, 3)))
    assert not supports(TfidfVectorizer(stop_words="english"))
    assert not supports(TfidfVectorizer(analyzer="char_wb"))
    with pytest.raises(ValueError, match="word 1-2-gram"):
        WordNgrams(TfidfVectorizer(binary=True).fit(["ab cd", "cd ef"]))


def test_char_counts_of_split_texts_equal_the_word_by_word_sum() -> None:
    texts = _texts()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2).fit(texts)
    chars = CachedCharNgrams(vectorizer)
    sample = texts[:300] + ODD

    counts = chars.counts_of_words([t.lower().split() for t in sample]).toarray()

    for row, text in enumerate(sample):
        expected = np.zeros(len(vectorizer.vocabulary_))
        for word in text.lower().split():
            columns, values = chars._word_vector(word)
            np.add.at(expected, columns, values)
        assert np.array_equal(counts[row], expected)
