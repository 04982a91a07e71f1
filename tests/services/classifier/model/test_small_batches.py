"""Small batches predict what the reference computes (to 1e-12) and what the same texts
predict inside a larger batch: the fast path's per-call shortcuts (the text block and the cue
block built from their arrays, the char TF-IDF normalised on its arrays, the class names kept)
change no number. The helpers are held to the scipy operations they replace, bit for bit.

Inside a larger batch the probabilities agree to float32 rounding, not bit for bit, and did
so before these shortcuts: the heads' weights are float32 (fitted on float32 features) and
the dense sentence block meets them in BLAS, whose summation order depends on the number of
rows (a one-row product is not a many-row one's row)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse  # type: ignore[import-untyped]

from services.classifier.config import SEED_EXAMPLES
from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.examples import read_examples_csv
from services.classifier.model.text_model import Prediction, TextModel, _side_by_side, _sparse_rows
from services.classifier.training import TrainedModel

ODD = ["", "   ", "!!!", "a", "didnt come, no-one came?!", "top-up failed: £20.00 (again)"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [e.text for e in read_examples_csv(SEED_EXAMPLES).examples][:60] + ODD


@pytest.fixture(scope="module")
def model(seed_model: TrainedModel) -> TextModel:
    # The session's seed model (any trained model holds the property; training one more of
    # its own cost this module ~7 s of a suite run).
    return seed_model.model


def _labels(predictions: list[Prediction]) -> list[tuple[object, ...]]:
    return [
        (p.purpose, p.demand_type, p.failure_kind, tuple(n for n, _ in p.alternatives))
        for p in predictions
    ]


def _numbers(predictions: list[Prediction]) -> np.ndarray:
    return np.array(
        [
            [
                p.purpose_probability,
                p.demand_type_probability,
                p.failure_kind_probability,
                *(v for _, v in p.alternatives),
            ]
            for p in predictions
        ]
    )


@pytest.mark.parametrize("size", [1, 2, 7])
def test_a_small_batch_predicts_as_inside_a_larger_one_and_as_the_reference(
    model: TextModel, texts: list[str], size: int
) -> None:
    whole = model.predict_batch(texts)
    for start in range(0, len(texts) - size + 1, max(1, size * 3)):
        part = texts[start : start + size]
        alone, inside = model.predict_batch(part), whole[start : start + size]
        assert _labels(alone) == _labels(inside)
        assert np.abs(_numbers(alone) - _numbers(inside)).max() <= 1e-6
        fast = model._scores(part)
        reference = model.reference_probabilities(part)
        for have, want in zip(fast, reference, strict=True):
            assert have is not None
            assert want is not None
            assert have.shape == want.shape
            assert np.abs(have - want).max() <= 1e-12


def _same(have: sparse.csr_matrix, want: sparse.csr_matrix) -> None:
    assert have.shape == want.shape
    assert have.dtype == want.dtype
    assert np.array_equal(have.indptr, want.indptr)
    assert np.array_equal(have.indices, want.indices)
    assert np.array_equal(have.data, want.data)  # bit for bit, in the same order


def test_side_by_side_lays_out_the_blocks_as_hstack() -> None:
    rng = np.random.default_rng(7)
    dense_left = rng.random((9, 13), dtype=np.float32) * (rng.random((9, 13)) < 0.3)
    dense_right = rng.random((9, 5), dtype=np.float32) * (rng.random((9, 5)) < 0.4)
    dense_left[3] = 0  # empty rows on either side and on both
    dense_right[[3, 6]] = 0
    left = sparse.csr_matrix(dense_left.astype(np.float32))
    right = sparse.csr_matrix(dense_right.astype(np.float32))
    want = sparse.hstack([left, right], format="csr", dtype=np.float32)
    _same(_side_by_side(left, right), want)
    _same(_side_by_side(left[:0], right[:0]), sparse.hstack([left[:0], right[:0]], format="csr"))


def test_sparse_rows_is_the_dense_conversion() -> None:
    rows = np.array([[0, 1.5, 0, 2], [0, 0, 0, 0], [3, 0, 0, 0.25]], dtype=np.float32)
    _same(_sparse_rows(rows), sparse.csr_matrix(rows))
    _same(_sparse_rows(rows * 0.3), sparse.csr_matrix(rows) * 0.3)


def test_the_char_block_is_normalised_as_by_the_sparse_operations(
    model: TextModel, texts: list[str]
) -> None:
    chars = CachedCharNgrams(model._chars)
    counts = chars.counts(texts)
    want = counts.copy()  # the steps as written before, through scipy
    want.eliminate_zeros()
    np.log(want.data, out=want.data)
    want.data += 1.0
    want.data *= np.asarray(model._chars.idf_, dtype=np.float64)[want.indices]
    norms = np.sqrt(np.asarray(want.multiply(want).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    want = sparse.csr_matrix(sparse.diags(1.0 / norms) @ want)
    want = sparse.csr_matrix(want, dtype=np.float32)
    want.sort_indices()
    _same(chars.weighted(counts), want)
