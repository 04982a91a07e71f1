"""The fast prediction path (``TextModel._scores``: shared lowercasing and splitting,
``WordNgrams``, the batch char counts, the cue search keys, stacked head weights) predicts
what the plain computation predicts: the same labels and the same probabilities, on the
shipped seed set, general corpus and council data, for the shipped recipe trained as the
service trains it (seed + taxonomy + corpus) and for the council taxonomy.

The reference here is built from the parts that were not changed for speed: scikit-learn's
own word vectorizer, each text's char n-gram counts summed word by word, every cue group
searched in every text, and each head's own ``probabilities_of``."""

from __future__ import annotations

import io
import os
import pickle
import re

import joblib
import numpy as np
import pytest
from scipy import sparse  # type: ignore[import-untyped]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from services.classifier.config import GENERAL_CORPUS, SEED_EXAMPLES, SHIPPED_DATA, TAXONOMY
from services.classifier.model import store
from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.examples import read_examples_csv
from services.classifier.model.lexicon import CueCounter, compile_cues
from services.classifier.model.text_model import TextModel, _Blocks
from services.classifier.taxonomy import load_taxonomy
from services.classifier.training import TrainedModel, general_rows, read_rows, split_sources

COUNCIL_TAXONOMY = SHIPPED_DATA / "taxonomies" / "council_housing_repairs.yaml"
COUNCIL_EXAMPLES = SHIPPED_DATA / "taxonomies" / "council_housing_repairs_examples.csv"
ODD = [
    "",
    "   ",
    "a",
    "!!!",
    "I",
    "ok  ok\tok\n\nok",
    "Ça ne marche PAS !!!",
    "x" * 40,
    "didnt come, no-one came, didn't turn up?!",
    "where's   my\u2019card ... it's been 2 weeks",
    "top-up failed: £20.00 (again)",
    "ÏSTANBUL İzmir ΣΟΦΟΣ",
]


def _texts() -> list[str]:
    rows = [
        *read_examples_csv(SEED_EXAMPLES).examples,
        *read_examples_csv(GENERAL_CORPUS).examples,
        *read_examples_csv(COUNCIL_EXAMPLES).examples,
    ]
    return [e.text for e in rows] + ODD


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


@pytest.fixture(scope="module", params=["seed", "council"])
def model(request: pytest.FixtureRequest) -> TextModel:
    """The shipped recipe (as ``training.train_model`` trains it) with either taxonomy."""
    if request.param == "seed":
        # The session's seed model is this recipe already: not trained a second time.
        seed_model: TrainedModel = request.getfixturevalue("seed_model")
        return seed_model.model
    taxonomy = load_taxonomy(TAXONOMY if request.param == "seed" else COUNCIL_TAXONOMY)
    seed = read_rows(SEED_EXAMPLES if request.param == "seed" else COUNCIL_EXAMPLES)
    rows = split_sources(taxonomy, seed, general_rows(GENERAL_CORPUS))
    return TextModel.train(rows.own, taxonomy, general=rows.general)


def _reference_chars(model: TextModel, texts: list[str]) -> sparse.csr_matrix:
    """Each text's char n-gram counts as the sum of its words' counts, one text at a time."""
    chars = CachedCharNgrams(model._chars)
    rows = []
    for text in texts:
        counts: dict[int, float] = {}
        for word in text.lower().split():
            for column, count in zip(*chars._word_vector(word), strict=True):
                counts[int(column)] = counts.get(int(column), 0.0) + float(count)
        row = np.zeros(len(model._chars.vocabulary_))
        row[list(counts)] = list(counts.values())
        rows.append(row)
    return chars.weighted(sparse.csr_matrix(np.vstack(rows)))


def _keyless(counter: CueCounter) -> CueCounter:
    plain: CueCounter = pickle.loads(pickle.dumps(counter))
    plain.__dict__.pop("_keys", None)  # searches every group in every text
    return plain


def _reference(
    model: TextModel, texts: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    text = sparse.hstack(
        [model._words.transform(texts), _reference_chars(model, texts)],
        format="csr",
        dtype=np.float32,
    )
    meaning = model._embedder().embed(texts)
    blocks = _Blocks(texts=texts, text=text, meaning=meaning)
    cues, model._cues = model._cues, _keyless(model._cues)
    try:
        judgement = model._judgement_parts(blocks)
    finally:
        model._cues = cues
    assert model._failure_kind is not None
    return (
        model._purpose.probabilities_of(model._purpose_parts(blocks)),
        model._demand_type.probabilities_of(judgement),
        model._failure_kind.probabilities_of(judgement),
    )


def _check(model: TextModel, texts: list[str]) -> None:
    for start in range(0, len(texts), 500):
        batch = texts[start : start + 500]
        # The reference with several BLAS threads, the fast path with one (_one_blas_thread).
        with threadpool_limits(limits=max(2, os.cpu_count() or 2), user_api="blas"):
            expected = _reference(model, batch)
        got = model._scores(batch)
        for want, have in zip(expected, got, strict=True):
            assert want is not None
            assert have is not None
            assert want.shape == have.shape
            assert np.abs(want - have).max() <= 1e-9
        predictions = model.predict_batch(batch)
        purposes, demand_types, kinds = expected
        assert kinds is not None
        assert model._failure_kind is not None
        assert [p.purpose for p in predictions] == [
            str(model._purpose.classes[i]) for i in purposes.argmax(axis=1)
        ]
        assert [p.demand_type for p in predictions] == [
            str(model._demand_type.classes[i]) for i in demand_types.argmax(axis=1)
        ]
        assert [p.failure_kind for p in predictions] == [
            str(model._failure_kind.classes[i]) for i in kinds.argmax(axis=1)
        ]
        assert [p.purpose_probability for p in predictions] == pytest.approx(
            purposes.max(axis=1).tolist(), abs=1e-9
        )


def test_the_fast_path_predicts_what_the_reference_computes(
    model: TextModel, texts: list[str]
) -> None:
    _check(model, texts)


def test_a_model_saved_before_the_fast_path_loads_and_predicts_the_same(
    model: TextModel, texts: list[str]
) -> None:
    sample = texts[:200] + ODD
    model.predict_batch(sample)  # the caches exist now
    payload = store.dumps(model)
    for cache in ("_fast_words", "_fast_chars", "_stacked_heads"):
        assert cache not in joblib.load(io.BytesIO(payload)).__dict__  # never stored
    # A model pickled before the cue counter had search keys: it has none until first use.
    old = joblib.load(io.BytesIO(payload))
    del old._cues.__dict__["_keys"]
    loaded = store.loads(store.dumps(old), where="test")
    assert "_keys" not in loaded._cues.__dict__
    _check(loaded, sample)
    assert loaded._cues.__dict__["_keys"] == model._cues._keys  # adopted from the lexicon


def test_cue_search_keys_skip_only_groups_that_cannot_match(texts: list[str]) -> None:
    extra = {
        "repeat": ["umpteenth time", "no-one again", "'til now", "dogs'"],
        "fees": ["£5 fee", "charge"],
        "empty": ["  "],
    }
    counter = CueCounter(extra)
    plain = _keyless(counter)
    sample = [*texts, "'til now", "dogs' dinner", "the dogs", "charged £5 fee", "x'til now"]

    assert counter._keys[counter.group_names.index("fees")] is None  # "£": always searched
    assert counter._keys[counter.group_names.index("empty")] is None
    assert (counter.transform(sample) != plain.transform(sample)).nnz == 0
    # and the keyless counter is the plain regex count, group by group
    from services.classifier.model.lexicon import _APOSTROPHES, CUE_GROUPS

    groups = {n: list(p) for n, p in CUE_GROUPS.items()}
    for name, phrases in extra.items():
        groups.setdefault(name, []).extend(phrases)
    dense = plain.transform(sample).toarray()
    for column, name in enumerate(counter.group_names):
        pattern = compile_cues(groups[name])
        hits = [len(pattern.findall(t.lower().translate(_APOSTROPHES))) for t in sample]
        assert np.allclose(dense[:, column], np.log1p(hits).astype(np.float32))


def test_keys_are_not_adopted_from_a_counter_with_other_phrases() -> None:
    old = CueCounter({"repeat": ["umpteenth"]})
    del old.__dict__["_keys"]

    assert not old.adopt_keys(CueCounter())
    assert "_keys" not in old.__dict__
    assert old.adopt_keys(CueCounter({"repeat": ["umpteenth"]}))


def test_keys_are_adopted_whatever_the_order_of_equal_length_phrases() -> None:
    """Another process may have ordered phrases of one length otherwise (set order)."""
    old = CueCounter({"repeat": ["umpteenth"]})
    del old.__dict__["_keys"]
    head, tail = r"(?<![\w'])(?:", r")(?![\w'])"
    for number, pattern in enumerate(old._patterns):
        assert pattern.pattern.startswith(head)
        assert pattern.pattern.endswith(tail)
        inner = pattern.pattern[len(head) : -len(tail)].split("|")
        old._patterns[number] = re.compile(head + "|".join(reversed(inner)) + tail)

    assert old.adopt_keys(CueCounter({"repeat": ["umpteenth"]}))


def test_a_batch_counts_each_texts_cues_as_that_text_alone(texts: list[str]) -> None:
    """The batch's cue search runs over the texts joined, each whitespace run made one space:
    no cue may span two texts ("still" ending one and "not been" starting the next), take a
    match away from the next text, or land in the wrong row, and any whitespace between a
    phrase's words still joins them; the keyless counter searches each text on its own."""
    counter = CueCounter({"fees": ["£5 fee"]})  # one group searched everywhere, too
    plain = _keyless(counter)
    sample = [
        "i am still",
        "not been done",
        "still not been",
        "x\x00still not",
        "",
        "'",
        "where\u2019s it? yet again!",
        "no one",
        "called",
        "£5 fee twice, never again",
        "  still \t\n not   been\u00a0done ",
        "still\u2028not, yet\x1fagain",
        "DIDN\u2019T   Come",
        *texts[:300],
    ]
    batch = counter.rows(sample)
    assert np.array_equal(batch, counter.rows(sample, [t.lower().split() for t in sample]))
    assert batch[:, : len(counter.group_names)].any()
    alone = np.vstack([counter.rows([text]) for text in sample])
    assert np.array_equal(batch, alone)
    assert np.array_equal(batch, plain.rows(sample))
    for size in (2, 3, 7):
        pieces = [counter.rows(sample[at : at + size]) for at in range(0, len(sample), size)]
        assert np.array_equal(np.vstack(pieces), batch)
