"""The model the stream uses right now, and how a new one replaces it without a pause.

A new version comes from three places: `demandscope classifier retrain` or `rollback` in
another process (seen by ``watch``, which polls the CURRENT file), the retrain schedule
(``retrain_on_schedule``), or POST /v1/retrain. Training and loading run in a thread; the swap
is one reference assignment, so a batch is classified wholly by one version and says which.
One retraining runs at a time: training takes a core for seconds, so a caller that finds one
running is told so (``RetrainInProgress``) instead of queueing another.

``load`` runs in the service's ``build``; ``watch`` and ``retrain_on_schedule`` are background
tasks under the service's supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from services.classifier.db.repository import LabelRepository
from services.classifier.model import store
from services.classifier.model.text_model import TextModel
from services.classifier.rules import RuleSet
from services.classifier.taxonomy import TaxonomyError
from services.classifier.training import TrainingSources, train_version

log = logging.getLogger(__name__)

# What loading a version another process wrote can raise: the watch logs it and keeps the
# live model (anything else is a bug, and the supervisor sees it).
_UNLOADABLE = (store.ModelStoreError, OSError, EOFError, pickle.UnpicklingError)


@dataclass(frozen=True, slots=True)
class ModelInUse:
    version: str
    model: TextModel
    rules: RuleSet


def in_use(version: str, model: TextModel) -> ModelInUse:
    return ModelInUse(version, model, RuleSet.from_taxonomy(model.taxonomy))


def fingerprint(model: TextModel) -> str | None:
    """The hash of the taxonomy ``model`` was trained on (None: trained without one)."""
    return model.taxonomy.content_hash() if model.taxonomy is not None else None


class RetrainInProgress(RuntimeError):
    """A retraining is already running; this one was not started."""


class ModelKeeper:
    def __init__(
        self,
        *,
        model_dir: Path,
        sources: TrainingSources,
        labels: LabelRepository,
        watch_interval_s: float,
        retrain_interval_s: float,
        on_swap: Callable[[ModelInUse], None],
    ) -> None:
        self._model_dir = model_dir
        self._sources = sources
        self._labels = labels
        self._watch_interval_s = watch_interval_s
        self._retrain_interval_s = retrain_interval_s
        self._on_swap = on_swap
        self._current: ModelInUse | None = None
        self._retrain_lock = asyncio.Lock()
        self._labels_at_last_training = 0

    @property
    def current(self) -> ModelInUse:
        if self._current is None:
            raise RuntimeError("the model is not loaded yet: call load() first")
        return self._current

    @property
    def retraining(self) -> bool:
        return self._retrain_lock.locked()

    async def load(self) -> None:
        """Load CURRENT, or train a new version when there is none (a fresh machine), when it
        was made by an older classifier, or when the taxonomy changed since it was trained
        (a model knows the fingerprint of the taxonomy it learnt from; a changed taxonomy
        is logged and a model of the current one trained, so purposes are never stale)."""
        version = await asyncio.to_thread(store.current_version, self._model_dir)
        reason = "bootstrap"
        if version is not None:
            try:
                model = await asyncio.to_thread(store.load, self._model_dir, version)
            except store.OutdatedModel as error:
                log.warning("%s; training a new version now", error)
                reason = "outdated model"
            else:
                wanted = await asyncio.to_thread(self._sources.taxonomy_fingerprint)
                known = fingerprint(model)
                if self._sources.taxonomy is None or wanted == known:
                    self._swap(in_use(version, model))
                    self._labels_at_last_training = await self._labels.count()
                    return
                log.warning(
                    "the taxonomy changed: model version %s was trained on taxonomy %s, "
                    "%s is now %s; training a new model from the current taxonomy",
                    version,
                    known,
                    self._sources.taxonomy,
                    wanted,
                )
                reason = "taxonomy changed"
        labels = await self._labels.training_examples()
        trained = await asyncio.to_thread(
            train_version,
            self._model_dir,
            self._sources,
            reason=reason,
            labels=labels,
            with_evaluation=False,
        )
        log.info("trained model version %s (%s)", trained.version, reason)
        self._swap(in_use(trained.version, trained.model))
        self._labels_at_last_training = await self._labels.count()

    async def retrain(self, reason: str, *, wait: bool = True) -> str:
        """Train on seed + labels now, save the version, and classify with it from now on.

        With ``wait=False`` a retraining already running raises ``RetrainInProgress``.
        """
        if not wait and self._retrain_lock.locked():
            raise RetrainInProgress("a retraining is already running")
        async with self._retrain_lock:
            count = await self._labels.count()
            labels = await self._labels.training_examples()
            started = time.perf_counter()
            trained = await asyncio.to_thread(
                train_version, self._model_dir, self._sources, reason=reason, labels=labels
            )
            self._labels_at_last_training = count
            self._swap(in_use(trained.version, trained.model))
            log.info(
                "retrained (%s) with %d labels in %.1fs: version %s",
                reason,
                trained.labels,
                time.perf_counter() - started,
                trained.version,
            )
            return trained.version

    def _swap(self, model: ModelInUse) -> None:
        self._current = model
        self._on_swap(model)

    async def watch(self) -> None:
        """Background task: swap to a version another process made current."""
        while True:
            await asyncio.sleep(self._watch_interval_s)
            try:
                await self.refresh()
            except _UNLOADABLE as error:  # a bad version must not stop the stream
                log.error(
                    "could not load the current model version (%r); keeping the old one", error
                )

    async def refresh(self) -> bool:
        """Load CURRENT if another process changed it (retrain or rollback); True if swapped."""
        version = await asyncio.to_thread(store.current_version, self._model_dir)
        if version is None or self._current is None or version == self._current.version:
            return False
        model = await asyncio.to_thread(store.load, self._model_dir, version)
        if self._sources.taxonomy is not None:
            try:
                wanted = await asyncio.to_thread(self._sources.taxonomy_fingerprint)
            except TaxonomyError as error:
                log.error("cannot read the taxonomy to compare: %s", error)
                wanted = None
            if wanted is not None and fingerprint(model) != wanted:  # made current elsewhere
                log.warning(
                    "model version %s was trained on taxonomy %s, not on %s (%s)",
                    version,
                    fingerprint(model),
                    self._sources.taxonomy,
                    wanted,
                )
        self._swap(in_use(version, model))
        log.info("now classifying with model version %s", version)
        return True

    async def retrain_on_schedule(self) -> None:
        """Background task: retrain every ``retrain_interval_s`` when new labels arrived."""
        while True:
            await asyncio.sleep(self._retrain_interval_s)
            try:
                if await self._labels.count() > self._labels_at_last_training:
                    await self.retrain("schedule")
            except DBAPIError as error:  # the label store is away: try again next round
                log.error("scheduled retraining skipped, label store unavailable: %r", error)
