"""The text model: TF-IDF, cue and sentence-meaning features, three linear heads.

One feature pass per batch feeds every head, which keeps batch prediction fast. Heads:

- purpose: only the organisation's own purposes, learnt from its taxonomy (each purpose's
  description and examples) and its labelled rows; never from the general corpus;
- demand_type (value/failure): the organisation's labelled rows (each counting
  ``own_weight`` times) plus the general multi-sector corpus, so that an organisation with
  no labels starts from many sectors' notion of failure rather than one sector's words;
- failure_kind: the failure rows of both.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]
from scipy.special import expit, logit  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import softmax
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.embeddings import SentenceEmbedder, shared_embedder
from services.classifier.model.examples import Example
from services.classifier.model.lexicon import CueCounter
from services.classifier.model.word_ngrams import WordNgrams
from services.classifier.model.word_ngrams import supports as supports_words
from services.classifier.taxonomy import Taxonomy

Progress = Callable[[str, float], None]
"""Called with a step name and the fraction of training done (0..1)."""

FORMAT = 2
"""Bumped when a saved model's features change; an older saved model is retrained, not used."""


@dataclass(frozen=True, slots=True)
class ModelSettings:
    # Cue features are few and dense; scaling them up lets them compete with thousands of
    # sparse n-grams, which is what carries the value/failure signal to unseen domains.
    # Chosen on the seed data by 5-fold CV and leave-purposes-out (see EVALUATION.md).
    cue_weight: float = 0.3
    purpose_c: float = 3.0
    demand_type_c: float = 10.0
    failure_kind_c: float = 5.0
    alternatives: int = 3
    # Character n-grams carry spelling variants and unseen words; their extraction is most of
    # the prediction cost (pure Python in scikit-learn), so the range is a speed/accuracy knob.
    char_ngram_range: tuple[int, int] = (2, 5)
    # Scale of the unit-length sentence embedding next to the l2-normalised TF-IDF blocks in
    # the value/failure and failure-kind heads, and in the purpose head (0 = not used).
    # Chosen by leave-one-sector-out and few-shot runs of `python -m bench judgement` (see
    # EVALUATION.md): meaning helps purposes from few examples (+5 points on the seed set);
    # for value/failure a light touch (0.5) generalises best, 1.0 and more lose points.
    embedding_weight: float = 0.5
    purpose_embedding_weight: float = 1.0
    # For value/failure, each of the organisation's own labelled rows counts this many
    # general-corpus rows: its own examples say what failure means *for it*.
    own_weight: float = 3.0
    # The taxonomy's purpose keywords are short phrasings of the purpose: training rows too.
    purpose_keywords: bool = True
    # The value/failure head is fitted class-balanced, about a 50/50 prior: right for a new
    # organisation whose failure share nobody knows. Once it has this many labelled rows of its
    # own, their failure share (Laplace-smoothed) becomes the prior, because accuracy is
    # highest at the organisation's real share and a balanced head over-calls failure where
    # failure is rare (EVALUATION.md, "Organisations where failure is rare"). Every labelled
    # row of its own counts, each once (``failure_prior_of``). 0 = never.
    own_prior_min_rows: int = 30


@dataclass(frozen=True, slots=True)
class FailurePrior:
    share: float
    source: str
    """Where the share came from, kept in the model's metadata: "estimate" (the metrics
    service's audited estimate, ``services/classifier/failure_share.py``) or "labels" (every
    labelled row of the organisation's own)."""
    rows: int
    """The rows behind it: labelled rows, or the audited demands behind the estimate."""


def failure_prior_of(rows: Sequence[Example], min_rows: int) -> FailurePrior | None:
    """The organisation's failure share as the value/failure prior, Laplace-smoothed
    (``(failures + 1) / (rows + 2)``), once at least ``min_rows`` of ``rows`` (0: never) say
    value or failure; ``rows`` each once: a label counted several times for its weight would
    count several times here.

    The audit labels are not taken alone: the metrics service draws its audit per (purpose,
    week) with unequal chances (every demand of a small stratum, 2% of a large one) and
    corrects for that in its stratified estimate; their raw share here would lean to the
    small purposes (docs/services/classifier.md, "The value/failure prior")."""
    if min_rows <= 0:
        return None
    judged = [e for e in rows if e.demand_type]
    if len(judged) < min_rows:
        return None
    failures = sum(e.demand_type == "failure" for e in judged)
    return FailurePrior((failures + 1) / (len(judged) + 2), "labels", len(judged))


@dataclass(frozen=True, slots=True)
class Prediction:
    purpose: str
    purpose_probability: float
    demand_type: str
    demand_type_probability: float
    failure_kind: str | None
    failure_kind_probability: float
    alternatives: tuple[tuple[str, float], ...] = ()
    """The next most likely purposes after the top one, with their probabilities."""


@dataclass(frozen=True, slots=True)
class Driver:
    feature: str
    weight: float


@dataclass(frozen=True, slots=True)
class Explanation:
    prediction: Prediction
    drivers: dict[str, tuple[Driver, ...]] = field(default_factory=dict)
    """Per head ("purpose", "demand_type", "failure_kind"): the features that pushed its label."""


class _Head:
    """One label: a logistic regression, or a constant when training saw a single class."""

    # Each class's share of the weight the fit saw (class weights x row weights): the prior
    # its probabilities assume. Empty on heads pickled before it was kept.
    fitted_share: dict[str, float] = {}

    def __init__(self, c: float) -> None:
        self._c = c
        self._model: LogisticRegression | None = None
        self.classes: np.ndarray = np.array([])
        self.fitted_share = {}

    def fit(
        self,
        features: sparse.csr_matrix,
        labels: Sequence[str],
        weights: Sequence[float] | None = None,
    ) -> _Head:
        self.classes = np.array(sorted(set(labels)))
        if len(self.classes) > 1:
            self._model = LogisticRegression(C=self._c, max_iter=2000, class_weight="balanced")
            self._model.fit(
                features, labels, sample_weight=None if weights is None else np.asarray(weights)
            )
            self.classes = self._model.classes_
            # "balanced" weighs each class by rows / (classes x its rows), counting rows
            # without their weights; the row weights then multiply in.
            counts = Counter(labels)
            mass: dict[str, float] = dict.fromkeys(counts, 0.0)
            for row, label in enumerate(labels):
                mass[label] += 1.0 if weights is None else weights[row]
            scaled = {label: mass[label] / counts[label] for label in counts}
            total = sum(scaled.values())
            self.fitted_share = {label: value / total for label, value in scaled.items()}
        return self

    def shift_log_odds(self, label: str, delta: float) -> None:
        """Add ``delta`` to a binary head's log-odds of ``label`` for every row (a change of
        prior: the fitted weights stay)."""
        if self._model is None or len(self.classes) != 2 or label not in self.classes:
            return
        # Binary weights point at classes[1]; the intercept is that class's log-odds.
        self._model.intercept_ += delta if label == self.classes[1] else -delta

    def probabilities(self, features: sparse.csr_matrix) -> np.ndarray:
        if self._model is None:
            return np.ones((features.shape[0], 1))
        result: np.ndarray = self._model.predict_proba(features)
        return result

    def probabilities_of(self, parts: Sequence[sparse.csr_matrix | np.ndarray]) -> np.ndarray:
        """``probabilities`` of the column blocks ``parts`` side by side, without building
        the stacked matrix: each block meets its slice of the weights (a dense block in a
        sparse matrix costs more than the product itself). Same numbers as predict_proba."""
        rows = parts[0].shape[0]
        if self._model is None:
            return np.ones((rows, 1))
        coef = self._model.coef_
        scores = np.tile(np.asarray(self._model.intercept_, dtype=np.float64), (rows, 1))
        start = 0
        for part in parts:
            width = part.shape[1]
            scores += np.asarray(part @ coef[:, start : start + width].T, dtype=np.float64)
            start += width
        if start != coef.shape[1]:
            raise ValueError(f"{start} feature columns for a head trained on {coef.shape[1]}")
        if coef.shape[0] == 1:  # binary: the weights point at classes[1]
            positive = expit(scores[:, 0])
            return np.column_stack([1.0 - positive, positive])
        result: np.ndarray = softmax(scores, copy=False)
        return result

    def contributions(self, row: sparse.csr_matrix, label_index: int) -> np.ndarray:
        """Each feature's push towards ``label_index`` for one row (weight x value)."""
        dense = np.asarray(row.todense()).ravel()
        if self._model is None:
            return np.zeros_like(dense)
        coef = self._model.coef_
        if coef.shape[0] == 1:  # binary: one weight vector pointing at classes_[1]
            direction = coef[0] if label_index == 1 else -coef[0]
        else:
            direction = coef[label_index]
        result: np.ndarray = direction * dense
        return result


class TextModel:
    # The value/failure prior set after fitting, and where it came from ("labels";
    # how many rows); None on models pickled before each was kept.
    failure_prior: float | None = None
    failure_prior_source: str | None = None
    failure_prior_rows: int | None = None

    def __init__(
        self, settings: ModelSettings | None = None, taxonomy: Taxonomy | None = None
    ) -> None:
        self.format = FORMAT
        self.settings = settings or ModelSettings()
        self._cues = CueCounter(_extra_cues(taxonomy))
        self._words = TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, 2),
            sublinear_tf=True,
            lowercase=True,
            token_pattern=r"(?u)\b\w[\w']*\b",
            dtype=np.float32,
        )
        self._chars = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=self.settings.char_ngram_range,
            sublinear_tf=True,
            lowercase=True,
            min_df=2,
            dtype=np.float32,
        )
        self._purpose = _Head(self.settings.purpose_c)
        self._demand_type = _Head(self.settings.demand_type_c)
        self._failure_kind: _Head | None = None
        self.label_counts: dict[str, dict[str, int]] = {}
        self.failure_prior: float | None = None
        self.failure_prior_source: str | None = None
        self.failure_prior_rows: int | None = None
        self.taxonomy = taxonomy

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        examples: Sequence[Example],
        taxonomy: Taxonomy | None = None,
        progress: Progress | None = None,
        settings: ModelSettings | None = None,
        *,
        general: Sequence[Example] = (),
        prior_rows: Sequence[Example] | None = None,
    ) -> TextModel:
        """Fit every head.

        ``examples`` are the organisation's own labelled rows (text, purpose, demand_type;
        failure_kind optional); with a ``taxonomy`` only rows of its purposes teach purpose
        (the others still teach value/failure). ``general`` rows (the multi-sector corpus)
        teach value/failure and failure kind only. With a taxonomy and no examples at all the
        purposes come from the taxonomy's own descriptions and examples (a cold start).
        ``prior_rows``: the organisation's rows, each once, that may set the failure prior
        (``failure_prior_of``); default ``examples``.
        """
        report = progress or (lambda _step, _fraction: None)
        model = cls(settings, taxonomy)
        weight = model.settings.own_weight
        own = [e for e in examples if e.text.strip() and e.demand_type]
        wide = [e for e in general if e.text.strip() and e.demand_type]
        allowed = (
            set(taxonomy.purpose_slugs)
            if taxonomy is not None
            else {e.purpose for e in own if e.purpose}
        )

        purpose_texts = [e.text for e in own if e.purpose in allowed]
        purpose_labels = [e.purpose or "" for e in own if e.purpose in allowed]
        if taxonomy is not None:  # the organisation's own phrasings teach its purposes too
            for definition in taxonomy.purposes:
                extra = [*definition.examples, definition.description]
                if model.settings.purpose_keywords:
                    extra += list(definition.keywords)
                extra = [t for t in extra if t.strip()]
                purpose_texts += extra
                purpose_labels += [definition.slug] * len(extra)
        if not purpose_texts:
            raise ValueError(
                "nothing to learn purposes from: give labelled examples (text, purpose, "
                "demand_type) or a taxonomy whose purposes have examples or descriptions"
            )
        judged = [*own, *wide]
        if not judged:
            raise ValueError(
                "nothing to learn value/failure from: give labelled examples or the general corpus"
            )

        report("features", 0.1)
        vocabulary = purpose_texts + [e.text for e in judged]
        model._words.fit(vocabulary)
        if len(vocabulary) < 50:  # tiny sets: keep rare character n-grams
            model._chars.set_params(min_df=1)
        model._chars.fit(vocabulary)

        report("purpose", 0.3)
        purpose_blocks = model._blocks(purpose_texts)
        model._purpose.fit(model._purpose_features(purpose_blocks), purpose_labels)

        report("demand type", 0.6)
        judged_texts = [e.text for e in judged]
        row_features = model._judgement_features(model._blocks(judged_texts))
        weights = [weight] * len(own) + [1.0] * len(wide)
        model._demand_type.fit(row_features, [e.demand_type or "" for e in judged], weights)
        prior = failure_prior_of(
            own if prior_rows is None else prior_rows, model.settings.own_prior_min_rows
        )
        if prior is not None:
            model.set_failure_prior(prior.share, source=prior.source, rows=prior.rows)

        report("failure kind", 0.8)
        failure_rows = [
            i for i, e in enumerate(judged) if e.demand_type == "failure" and e.failure_kind
        ]
        if failure_rows:
            model._failure_kind = _Head(model.settings.failure_kind_c).fit(
                row_features[failure_rows],
                [judged[i].failure_kind or "" for i in failure_rows],
                [weights[i] for i in failure_rows],
            )
        own_failures = [e for e in own if e.demand_type == "failure" and e.failure_kind]
        model.label_counts = {
            "purpose": dict(Counter(e.purpose for e in own if e.purpose in allowed)),
            "demand_type": dict(Counter(e.demand_type or "" for e in own)),
            "failure_kind": dict(Counter(e.failure_kind or "" for e in own_failures)),
            "general_demand_type": dict(Counter(e.demand_type or "" for e in wide)),
        }
        report("done", 1.0)
        return model

    def set_failure_prior(
        self, prior: float | None, *, source: str | None = None, rows: int | None = None
    ) -> None:
        """Judge value/failure as if failure made up ``prior`` of the demands (None: the
        prior the fit itself assumed, about 1/2 when class-balanced). Only the intercept
        moves. ``source`` and ``rows``: where the share came from, kept beside it."""
        if prior is not None and not 0.0 < prior < 1.0:
            raise ValueError(f"a failure prior is a share strictly between 0 and 1, not {prior}")
        fitted = self._demand_type.fitted_share.get("failure", 0.5)
        before = fitted if self.failure_prior is None else self.failure_prior
        after = fitted if prior is None else prior
        self._demand_type.shift_log_odds("failure", float(logit(after) - logit(before)))
        self.failure_prior = prior
        self.failure_prior_source = None if prior is None else source
        self.failure_prior_rows = None if prior is None else rows

    # -- features ---------------------------------------------------------------------------

    @property
    def purposes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self._purpose.classes)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        for cache in _CACHES:  # rebuilt on first use after loading
            state.pop(cache, None)
        return state

    @property
    def _uses_embeddings(self) -> bool:
        return self.settings.embedding_weight > 0 or self.settings.purpose_embedding_weight > 0

    def _char_features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self._cached("_fast_chars", lambda: CachedCharNgrams(self._chars)).transform(texts)

    def _cached(self, name: str, build: Callable[[], _T]) -> _T:
        """A derived object kept beside the model (not pickled: see ``_CACHES``)."""
        value: _T | None = self.__dict__.get(name)
        if value is None:
            value = build()
            self.__dict__[name] = value
        return value

    def _scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The three heads' probabilities (failure kind None without that head) for a batch.

        The same numbers as each head's ``probabilities_of`` over ``_blocks`` (the reference,
        still used by training and ``explain``; a test holds the two together), computed with
        less: each text is lowercased and split once for both TF-IDF blocks, the word block
        skips scikit-learn's per-token Python (``WordNgrams``), and every head's weights for
        a block are one stacked matrix, so a block meets them in one product."""
        if "_keys" not in self._cues.__dict__:  # saved before the cue counter had search keys
            self._cues.adopt_keys(CueCounter(_extra_cues(self.taxonomy)))
        lowered = [t.lower() for t in texts]
        words = self._cached("_fast_words", lambda: _word_block(self._words))
        chars = self._cached("_fast_chars", lambda: CachedCharNgrams(self._chars))
        split = [d.split() for d in lowered]
        text = _side_by_side(words(lowered, split), chars.transform_words(split))
        meaning = self._embedder().embed(texts) if self._uses_embeddings else None
        blocks = _Blocks(texts=texts, text=text, meaning=meaning)
        stacked = self._cached("_stacked_heads", lambda: _StackedHeads.of(self))
        purpose_parts = self._purpose_parts(blocks)
        # As ``_judgement_parts``, with the cue block built once from its dense rows
        # (``transform`` then ``* cue_weight`` built three sparse matrices for it).
        judgement_parts: list[sparse.csr_matrix | np.ndarray] = [
            text,
            _sparse_rows(self._cues.rows(texts, split) * self.settings.cue_weight),
        ]
        if meaning is not None and self.settings.embedding_weight > 0:
            judgement_parts.append(meaning * np.float32(self.settings.embedding_weight))
        with _one_blas_thread():
            return stacked.probabilities(purpose_parts, judgement_parts)

    def _blocks(self, texts: Sequence[str]) -> _Blocks:
        """Every feature block of a batch, computed once and shared by the heads."""
        text = sparse.hstack(
            [self._words.transform(texts), self._char_features(texts)],
            format="csr",
            dtype=np.float32,
        )
        meaning = self._embedder().embed(texts) if self._uses_embeddings else None
        return _Blocks(texts=texts, text=text, meaning=meaning)

    @staticmethod
    def _embedder() -> SentenceEmbedder:
        return shared_embedder()

    def _purpose_parts(self, blocks: _Blocks) -> list[sparse.csr_matrix | np.ndarray]:
        # Purpose is about what the customer wants, not how upset they are: no cue block.
        parts: list[sparse.csr_matrix | np.ndarray] = [blocks.text]
        if blocks.meaning is not None and self.settings.purpose_embedding_weight > 0:
            parts.append(blocks.meaning * np.float32(self.settings.purpose_embedding_weight))
        return parts

    def _judgement_parts(self, blocks: _Blocks) -> list[sparse.csr_matrix | np.ndarray]:
        """Blocks of the value/failure and failure-kind heads: text, cues, meaning."""
        parts: list[sparse.csr_matrix | np.ndarray] = [
            blocks.text,
            self._cues.transform(blocks.texts) * self.settings.cue_weight,
        ]
        if blocks.meaning is not None and self.settings.embedding_weight > 0:
            parts.append(blocks.meaning * np.float32(self.settings.embedding_weight))
        return parts

    @staticmethod
    def _stacked(parts: Sequence[sparse.csr_matrix | np.ndarray]) -> sparse.csr_matrix:
        return sparse.hstack(
            [p if sparse.issparse(p) else sparse.csr_matrix(p) for p in parts],
            format="csr",
            dtype=np.float32,
        )

    def _purpose_features(self, blocks: _Blocks) -> sparse.csr_matrix:
        return self._stacked(self._purpose_parts(blocks))

    def _judgement_features(self, blocks: _Blocks) -> sparse.csr_matrix:
        return self._stacked(self._judgement_parts(blocks))

    def _feature_names(self, head: str) -> list[str]:
        words = [f"word:{n}" for n in self._words.get_feature_names_out()]
        chars = [f"chars:{n!r}" for n in self._chars.get_feature_names_out()]
        meaning: list[str] = []
        if head == "purpose":
            extra: list[str] = []
            if self._uses_embeddings and self.settings.purpose_embedding_weight > 0:
                meaning = [MEANING] * SentenceEmbedder.dimensions
        else:
            extra = self._cues.feature_names
            if self._uses_embeddings and self.settings.embedding_weight > 0:
                meaning = [MEANING] * SentenceEmbedder.dimensions
        return words + chars + extra + meaning

    # -- prediction -------------------------------------------------------------------------

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        purpose_p, demand_p, kind_p = self._scores(texts)
        rows = np.arange(len(texts))
        keep = self.settings.alternatives
        # Plain lists and Python floats from here: numpy scalar indexing per row cost more
        # than the whole head products. The floats are the same (``tolist`` = ``float``).
        purposes, demands, kinds = self._cached("_class_names", self._class_names)
        purpose_order = np.argsort(-purpose_p, axis=1)[:, : keep + 1].tolist()
        purpose_rows = purpose_p.tolist()
        best_demand = np.argmax(demand_p, axis=1)
        demand_label = [demands[i] for i in best_demand.tolist()]
        demand_probability = demand_p[rows, best_demand].tolist()
        kind_label: list[str | None] = [None] * len(texts)
        kind_probability = [0.0] * len(texts)
        if kind_p is not None and self._failure_kind is not None:
            best_kind = np.argmax(kind_p, axis=1)
            kind_label = [kinds[i] for i in best_kind.tolist()]
            kind_probability = kind_p[rows, best_kind].tolist()
        return [
            Prediction(
                purpose=purposes[order[0]],
                purpose_probability=probabilities[order[0]],
                demand_type=demand_label[row],
                demand_type_probability=demand_probability[row],
                failure_kind=kind_label[row],
                failure_kind_probability=kind_probability[row],
                alternatives=tuple((purposes[i], probabilities[i]) for i in order[1:]),
            )
            for row, (order, probabilities) in enumerate(
                zip(purpose_order, purpose_rows, strict=True)
            )
        ]

    def _class_names(self) -> tuple[list[str], list[str], list[str]]:
        """Each head's classes as plain strings (purpose, demand type, failure kind)."""
        kinds = self._failure_kind.classes if self._failure_kind is not None else ()
        return (
            [str(c) for c in self._purpose.classes],
            [str(c) for c in self._demand_type.classes],
            [str(c) for c in kinds],
        )

    def reference_probabilities(
        self, texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """What ``_scores`` computes, the plain way: every block through ``_blocks`` and each
        head's own ``probabilities_of``. Slower; kept as the definition the fast path is held
        to (tests) and as what ``explain`` and training see."""
        blocks = self._blocks(texts)
        parts = self._judgement_parts(blocks)
        return (
            self._purpose.probabilities_of(self._purpose_parts(blocks)),
            self._demand_type.probabilities_of(parts),
            self._failure_kind.probabilities_of(parts) if self._failure_kind else None,
        )

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """P(failure) per text (0 when the model never saw a failure)."""
        if not texts:
            return np.zeros(0)
        probabilities = self._scores(texts)[1]
        classes = list(self._demand_type.classes)
        if "failure" not in classes:
            return np.zeros(len(texts))
        result: np.ndarray = probabilities[:, classes.index("failure")]
        return result

    def predict(self, text: str) -> Prediction:
        return self.predict_batch([text])[0]

    def explain(self, text: str, top: int = 8) -> Explanation:
        """The features that pushed each head's label; the sentence embedding's dimensions
        count as one feature, "sentence meaning"."""
        prediction = self.predict(text)
        blocks = self._blocks([text])
        heads: list[tuple[str, _Head | None, str | None, sparse.csr_matrix]] = [
            ("purpose", self._purpose, prediction.purpose, self._purpose_features(blocks)),
            ("demand_type", self._demand_type, prediction.demand_type, None),
            ("failure_kind", self._failure_kind, prediction.failure_kind, None),
        ]
        judged = self._judgement_features(blocks)
        drivers: dict[str, tuple[Driver, ...]] = {}
        for name, head, label, features in heads:
            if head is None or label is None:
                continue
            names = self._feature_names("purpose" if name == "purpose" else "judgement")
            index = int(np.flatnonzero(head.classes == label)[0])
            pushes = head.contributions(judged if features is None else features, index)
            totals: dict[str, float] = {}
            for i in np.flatnonzero(pushes):
                totals[names[i]] = totals.get(names[i], 0.0) + float(pushes[i])
            strongest = sorted(
                ((n, w) for n, w in totals.items() if w > 0), key=lambda item: -item[1]
            )[:top]
            drivers[name] = tuple(Driver(n, w) for n, w in strongest)
        return Explanation(prediction=prediction, drivers=drivers)


MEANING = "sentence meaning"


@dataclass(frozen=True, slots=True)
class _Blocks:
    texts: Sequence[str]
    text: sparse.csr_matrix
    meaning: np.ndarray | None


def _extra_cues(taxonomy: Taxonomy | None) -> dict[str, list[str]]:
    """The taxonomy's failure-kind keywords, as cue phrases of those kinds."""
    if taxonomy is None:
        return {}
    return {k.slug: list(k.keywords) for k in taxonomy.failure_kinds if k.keywords}


_T = TypeVar("_T")

_blas: ThreadpoolController | None = None
_blas_lock = threading.Lock()


def _one_blas_thread() -> AbstractContextManager[object]:
    """BLAS (OpenBLAS, under numpy) on the calling thread only, while the heads score a
    batch. The dense products (the batch's sentence vectors times each head's weights) are
    big enough for OpenBLAS to hand them to its worker threads, which then spin waiting for
    the next product: in a service that predicts a batch every few tens of milliseconds they
    hardly sleep, and burned more CPU than the model's own work (a core taken from the rest
    of the machine). Measured in one process, alternated (three rounds, load 3.2-3.5 on 2
    cores): 149-163 µs per demand with the default threads, 84-89 with
    this limit, 80-85 with one thread for the whole process. Each output element is the same
    kernel's sum whatever the threads, so the numbers do not change
    (test_prediction_equivalence.py computes the reference with several BLAS threads). The
    limit is process-wide while it lasts (so are the threads): BLAS work in another thread
    meanwhile, a training, runs on one thread too."""
    global _blas
    with _blas_lock:
        if _blas is None:
            # The BLAS libraries loaded when first asked, kept: ``ThreadpoolController.limit``
            # looked every library's state up again on each call (a fixed ~30 µs a batch).
            _blas = ThreadpoolController().select(user_api="blas")
        controller = _blas
    return _one_thread(controller.lib_controllers)


@contextmanager
def _one_thread(libraries: Sequence[Any]) -> Iterator[None]:
    """Each library on one thread while the block runs, then back to its count before."""
    before = [library.num_threads for library in libraries]
    try:
        for library, count in zip(libraries, before, strict=True):
            if count != 1:
                library.set_num_threads(1)
        yield
    finally:
        for library, count in zip(libraries, before, strict=True):
            if count != 1:
                library.set_num_threads(count)


_CACHES = ("_fast_chars", "_fast_words", "_stacked_heads", "_class_names")
"""Objects derived from a trained model on first use; never pickled, so a saved model's
bytes (and the versions saved before these existed) stay as they were."""


def _softmax(scores: np.ndarray) -> np.ndarray:
    """scikit-learn's ``softmax(scores, copy=False)``: its numpy steps, in its order (the same
    numbers), without its array-namespace look-up on every call."""
    scores -= np.max(scores, axis=1).reshape((-1, 1))
    np.exp(scores, out=scores)
    scores /= np.sum(scores, axis=1).reshape((-1, 1))
    return scores


def _side_by_side(left: sparse.csr_matrix, right: sparse.csr_matrix) -> sparse.csr_matrix:
    """``sparse.hstack([left, right], format="csr", dtype=np.float32)`` of two float32 CSR
    blocks, built from their arrays as hstack lays them out (each row: its ``left`` values,
    then its ``right`` values, their columns after ``left``'s): one matrix instead of
    hstack's several, the fixed part of a small batch's cost."""
    rows = left.shape[0]
    left_lengths, right_lengths = np.diff(left.indptr), np.diff(right.indptr)
    owner = np.concatenate(
        [
            np.repeat(np.arange(rows), left_lengths),
            np.repeat(np.arange(rows), right_lengths),
        ]
    )
    order = np.argsort(owner, kind="stable")  # per row: left's entries, then right's
    data = np.concatenate([left.data, right.data]).astype(np.float32, copy=False)[order]
    indices = np.concatenate(
        [left.indices.astype(np.int64), right.indices.astype(np.int64) + left.shape[1]]
    )[order]
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(left_lengths + right_lengths, out=indptr[1:])
    return sparse.csr_matrix(
        (data, indices.astype(np.int32), indptr.astype(np.int32)),
        shape=(rows, left.shape[1] + right.shape[1]),
    )


def _sparse_rows(rows: np.ndarray) -> sparse.csr_matrix:
    """``sparse.csr_matrix(rows)`` of a dense 2-D array, in one construction: its non-zero
    values in row-major order, as the conversion lays them out."""
    count, width = rows.shape
    flat = rows.ravel()
    at = np.flatnonzero(flat)
    indptr = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(np.bincount(at // width, minlength=count), out=indptr[1:])
    return sparse.csr_matrix(
        (flat[at], (at % width).astype(np.int32), indptr), shape=(count, width)
    )


def _word_block(
    vectorizer: TfidfVectorizer,
) -> Callable[[Sequence[str], Sequence[Sequence[str]]], sparse.csr_matrix]:
    """The word TF-IDF block of lowercased texts (and the same texts split on whitespace):
    ``WordNgrams`` when it reproduces the vectorizer, from the split words when its tokens
    allow (``WordNgrams.splits``), else the vectorizer itself (lowercasing again changes
    nothing)."""
    if supports_words(vectorizer):
        fast = WordNgrams(vectorizer)
        if fast.splits:
            return lambda _lowered, split: fast.transform_words(split)
        return lambda lowered, _split: fast.transform(lowered, lowered=True)
    return lambda lowered, _split: vectorizer.transform(lowered)


class _StackedHeads:
    """Every head's weights for a shared sparse block side by side, so that the block meets
    them in one product: the text block (all three heads) and the cue block (value/failure
    and failure kind). Each output column is summed exactly as in that head's own product
    (the same float32 multiply-adds in the same order), so the scores are the same numbers.
    The sentence vectors are dense and small: each head multiplies them itself, as in
    ``probabilities_of``."""

    _SHARED = ("text", "cues")
    """Blocks that are one matrix for every head using them."""

    def __init__(
        self, heads: Sequence[_Head | None], layouts: Sequence[Sequence[tuple[str, int]]]
    ) -> None:
        self._heads = list(heads)
        self._layouts = [list(layout) for layout in layouts]
        # (block, dtype) -> the stacked weights, and each head's columns in them
        self._stacks: dict[tuple[str, np.dtype[Any]], tuple[np.ndarray, dict[int, slice]]] = {}
        for block in self._SHARED:
            pieces: dict[np.dtype[Any], list[tuple[int, np.ndarray]]] = {}
            for number, head in enumerate(self._heads):
                model = head._model if head is not None else None
                if model is None:
                    continue
                start = 0
                for name, width in self._layouts[number]:
                    if name == block:
                        coef = model.coef_
                        piece = coef[:, start : start + width].T
                        pieces.setdefault(coef.dtype, []).append((number, piece))
                    start += width
            for dtype, found in pieces.items():
                columns: dict[int, slice] = {}
                at = 0
                for number, piece in found:
                    columns[number] = slice(at, at + piece.shape[1])
                    at += piece.shape[1]
                weights = np.ascontiguousarray(np.hstack([p for _, p in found]), dtype=dtype)
                self._stacks[(block, dtype)] = (weights, columns)

    @classmethod
    def of(cls, model: TextModel) -> _StackedHeads:
        """The layouts of ``_purpose_parts`` and ``_judgement_parts``."""
        text = ("text", len(model._words.vocabulary_) + len(model._chars.vocabulary_))
        meaning = ("meaning", SentenceEmbedder.dimensions)
        purpose = [text]
        if model._uses_embeddings and model.settings.purpose_embedding_weight > 0:
            purpose.append(meaning)
        judgement = [text, ("cues", len(model._cues.feature_names))]
        if model._uses_embeddings and model.settings.embedding_weight > 0:
            judgement.append(meaning)
        heads = (model._purpose, model._demand_type, model._failure_kind)
        layouts = (purpose, judgement, judgement)
        for head, layout in zip(heads, layouts, strict=True):
            trained = head._model if head is not None else None
            columns = sum(width for _, width in layout)
            if trained is not None and columns != trained.coef_.shape[1]:
                raise ValueError(
                    f"{columns} feature columns for a head trained on {trained.coef_.shape[1]}"
                )
        return cls(heads, layouts)

    def probabilities(
        self,
        purpose_parts: Sequence[sparse.csr_matrix | np.ndarray],
        judgement_parts: Sequence[sparse.csr_matrix | np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Each head's ``probabilities_of`` its parts (laid out as in ``of``)."""
        parts = (purpose_parts, judgement_parts, judgement_parts)
        products: dict[tuple[str, np.dtype[Any]], np.ndarray] = {}
        out: list[np.ndarray | None] = []
        for number, head in enumerate(self._heads):
            its = parts[number]
            rows = its[0].shape[0]
            model = head._model if head is not None else None
            if head is None:
                out.append(None)
                continue
            if model is None:
                out.append(np.ones((rows, 1)))
                continue
            coef = model.coef_
            scores = np.tile(np.asarray(model.intercept_, dtype=np.float64), (rows, 1))
            start = 0
            for (block, width), part in zip(self._layouts[number], its, strict=True):
                key = (block, coef.dtype)
                stack = self._stacks.get(key)
                if stack is not None:
                    if key not in products:
                        products[key] = part @ stack[0]
                    product = products[key][:, stack[1][number]]
                else:
                    product = part @ coef[:, start : start + width].T
                scores += np.asarray(product, dtype=np.float64)
                start += width
            if coef.shape[0] == 1:  # binary: the weights point at classes[1]
                positive = expit(scores[:, 0])
                out.append(np.column_stack([1.0 - positive, positive]))
            else:
                out.append(_softmax(scores))
        purpose, demand_type, failure_kind = out
        if purpose is None or demand_type is None:
            raise ValueError("a model without a purpose or value/failure head")
        return purpose, demand_type, failure_kind
