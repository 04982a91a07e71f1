"""The text model: shared TF-IDF + cue features, three calibrated linear heads.

One feature pass per batch feeds every head, which keeps batch prediction fast. Heads:
purpose (all rows, plus the taxonomy's own examples), demand_type (value/failure), and
failure_kind (failure rows only).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from services.classifier.model.char_ngrams import CachedCharNgrams
from services.classifier.model.examples import Example
from services.classifier.model.lexicon import CueCounter
from services.classifier.taxonomy import Taxonomy

Progress = Callable[[str, float], None]
"""Called with a step name and the fraction of training done (0..1)."""


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

    def fit(self, features: sparse.csr_matrix, labels: Sequence[str]) -> _Head:
        self.classes = np.array(sorted(set(labels)))
        if len(self.classes) > 1:
            self._model = LogisticRegression(C=self._c, max_iter=2000, class_weight="balanced")
            self._model.fit(features, labels)
            self.classes = self._model.classes_
        return self

    def probabilities(self, features: sparse.csr_matrix) -> np.ndarray:
        if self._model is None:
            return np.ones((features.shape[0], 1))
        result: np.ndarray = self._model.predict_proba(features)
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
    ) -> TextModel:
        """Fit every head. Rows need text, purpose and demand_type; failure_kind is optional."""
        rows = [e for e in examples if e.text.strip() and e.purpose and e.demand_type]
        if not rows:
            raise ValueError("no usable examples: each needs text, purpose and demand_type")
        report = progress or (lambda _step, _fraction: None)
        model = cls(settings, taxonomy)

        purpose_texts = [e.text for e in rows]
        purpose_labels: list[str] = [e.purpose for e in rows if e.purpose]
        if taxonomy is not None:  # the organisation's own phrasings teach its purposes too
            for definition in taxonomy.purposes:
                extra = [*definition.examples, definition.description]
                extra = [t for t in extra if t.strip()]
                purpose_texts += extra
                purpose_labels += [definition.slug] * len(extra)

        report("features", 0.1)
        model._words.fit(purpose_texts)
        if len(purpose_texts) < 50:  # tiny sets: keep rare character n-grams
            model._chars.set_params(min_df=1)
        model._chars.fit(purpose_texts)

        report("purpose", 0.3)
        model._purpose.fit(model._text_features(purpose_texts), purpose_labels)

        report("demand type", 0.6)
        texts = [e.text for e in rows]
        row_features = model._with_cues(model._text_features(texts), texts)
        demand_types = [e.demand_type for e in rows if e.demand_type]
        model._demand_type.fit(row_features, demand_types)

        report("failure kind", 0.8)
        failure_rows = [
            i for i, e in enumerate(rows) if e.demand_type == "failure" and e.failure_kind
        ]
        if failure_rows:
            model._failure_kind = _Head(model.settings.failure_kind_c).fit(
                row_features[failure_rows], [rows[i].failure_kind or "" for i in failure_rows]
            )
        model.label_counts = {
            "purpose": dict(Counter(e.purpose for e in rows if e.purpose)),
            "demand_type": dict(Counter(demand_types)),
            "failure_kind": dict(Counter(rows[i].failure_kind or "" for i in failure_rows)),
        }
        report("done", 1.0)
        return model

    # -- prediction -------------------------------------------------------------------------

    @property
    def purposes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self._purpose.classes)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_fast_chars", None)  # a cache: rebuilt on first use after loading
        return state

    def _char_features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        fast: CachedCharNgrams | None = self.__dict__.get("_fast_chars")
        if fast is None:
            fast = CachedCharNgrams(self._chars)
            self.__dict__["_fast_chars"] = fast
        return fast.transform(texts)

    def _text_features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        blocks = [self._words.transform(texts), self._char_features(texts)]
        return sparse.hstack(blocks, format="csr", dtype=np.float32)

    def _with_cues(
        self, text_features: sparse.csr_matrix, texts: Sequence[str]
    ) -> sparse.csr_matrix:
        # Purpose is about what the customer wants, not how upset they are, so only the
        # demand_type and failure_kind heads see the cue block.
        cues = self._cues.transform(texts) * self.settings.cue_weight
        return sparse.hstack([text_features, cues], format="csr", dtype=np.float32)

    def _feature_names(self) -> list[str]:
        words = [f"word:{n}" for n in self._words.get_feature_names_out()]
        chars = [f"chars:{n!r}" for n in self._chars.get_feature_names_out()]
        return words + chars + self._cues.feature_names

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        text_features = self._text_features(texts)
        features = self._with_cues(text_features, texts)
        purpose_p = self._purpose.probabilities(text_features)
        demand_p = self._demand_type.probabilities(features)
        kind_p = self._failure_kind.probabilities(features) if self._failure_kind else None
        keep = self.settings.alternatives
        predictions = []
        for row in range(len(texts)):
            order = np.argsort(-purpose_p[row])
            best_demand = int(np.argmax(demand_p[row]))
            kind: str | None = None
            kind_probability = 0.0
            if kind_p is not None and self._failure_kind is not None:
                best_kind = int(np.argmax(kind_p[row]))
                kind = str(self._failure_kind.classes[best_kind])
                kind_probability = float(kind_p[row, best_kind])
            predictions.append(
                Prediction(
                    purpose=str(self._purpose.classes[order[0]]),
                    purpose_probability=float(purpose_p[row, order[0]]),
                    demand_type=str(self._demand_type.classes[best_demand]),
                    demand_type_probability=float(demand_p[row, best_demand]),
                    failure_kind=kind,
                    failure_kind_probability=kind_probability,
                    alternatives=tuple(
                        (str(self._purpose.classes[i]), float(purpose_p[row, i]))
                        for i in order[1 : keep + 1]
                    ),
                )
            )
        return predictions

    def predict(self, text: str) -> Prediction:
        return self.predict_batch([text])[0]

    def explain(self, text: str, top: int = 8) -> Explanation:
        prediction = self.predict(text)
        text_row = self._text_features([text])
        row = self._with_cues(text_row, [text])
        names = self._feature_names()
        heads: list[tuple[str, _Head | None, str | None, sparse.csr_matrix]] = [
            ("purpose", self._purpose, prediction.purpose, text_row),
            ("demand_type", self._demand_type, prediction.demand_type, row),
            ("failure_kind", self._failure_kind, prediction.failure_kind, row),
        ]
        drivers: dict[str, tuple[Driver, ...]] = {}
        for name, head, label, features in heads:
            if head is None or label is None:
                continue
            index = int(np.flatnonzero(head.classes == label)[0])
            pushes = head.contributions(features, index)
            strongest = [i for i in np.argsort(-pushes)[:top] if pushes[i] > 0]
            drivers[name] = tuple(Driver(names[i], float(pushes[i])) for i in strongest)
        return Explanation(prediction=prediction, drivers=drivers)
