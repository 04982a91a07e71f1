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

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]
from scipy.special import expit  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import softmax

from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.embeddings import SentenceEmbedder, shared_embedder
from services.classifier.model.examples import Example
from services.classifier.model.lexicon import CueCounter
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

    def __init__(self, c: float) -> None:
        self._c = c
        self._model: LogisticRegression | None = None
        self.classes: np.ndarray = np.array([])

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
        return self

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
    def __init__(
        self, settings: ModelSettings | None = None, taxonomy: Taxonomy | None = None
    ) -> None:
        self.format = FORMAT
        self.settings = settings or ModelSettings()
        extra_cues = (
            {k.slug: list(k.keywords) for k in taxonomy.failure_kinds if k.keywords}
            if taxonomy
            else {}
        )
        self._cues = CueCounter(extra_cues)
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
    ) -> TextModel:
        """Fit every head.

        ``examples`` are the organisation's own labelled rows (text, purpose, demand_type;
        failure_kind optional); with a ``taxonomy`` only rows of its purposes teach purpose
        (the others still teach value/failure). ``general`` rows (the multi-sector corpus)
        teach value/failure and failure kind only. With a taxonomy and no examples at all the
        purposes come from the taxonomy's own descriptions and examples (a cold start).
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

    # -- features ---------------------------------------------------------------------------

    @property
    def purposes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self._purpose.classes)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_fast_chars", None)  # a cache: rebuilt on first use after loading
        return state

    @property
    def _uses_embeddings(self) -> bool:
        return self.settings.embedding_weight > 0 or self.settings.purpose_embedding_weight > 0

    def _char_features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        fast: CachedCharNgrams | None = self.__dict__.get("_fast_chars")
        if fast is None:
            fast = CachedCharNgrams(self._chars)
            self.__dict__["_fast_chars"] = fast
        return fast.transform(texts)

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
        blocks = self._blocks(texts)
        parts = self._judgement_parts(blocks)
        purpose_p = self._purpose.probabilities_of(self._purpose_parts(blocks))
        demand_p = self._demand_type.probabilities_of(parts)
        kind_p = self._failure_kind.probabilities_of(parts) if self._failure_kind else None
        keep = self.settings.alternatives
        purpose_classes = self._purpose.classes
        demand_classes = self._demand_type.classes
        purpose_order = np.argsort(-purpose_p, axis=1)[:, : keep + 1]
        best_demand = np.argmax(demand_p, axis=1)
        best_kind = np.argmax(kind_p, axis=1) if kind_p is not None else None
        predictions = []
        for row in range(len(texts)):
            order = purpose_order[row]
            kind: str | None = None
            kind_probability = 0.0
            if kind_p is not None and best_kind is not None and self._failure_kind is not None:
                kind = str(self._failure_kind.classes[best_kind[row]])
                kind_probability = float(kind_p[row, best_kind[row]])
            predictions.append(
                Prediction(
                    purpose=str(purpose_classes[order[0]]),
                    purpose_probability=float(purpose_p[row, order[0]]),
                    demand_type=str(demand_classes[best_demand[row]]),
                    demand_type_probability=float(demand_p[row, best_demand[row]]),
                    failure_kind=kind,
                    failure_kind_probability=kind_probability,
                    alternatives=tuple(
                        (str(purpose_classes[i]), float(purpose_p[row, i])) for i in order[1:]
                    ),
                )
            )
        return predictions

    def failure_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """P(failure) per text (0 when the model never saw a failure)."""
        if not texts:
            return np.zeros(0)
        probabilities = self._demand_type.probabilities_of(
            self._judgement_parts(self._blocks(texts))
        )
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
