"""The model the stream uses right now, and how a new one replaces it without a pause.

A new version comes from three places: `demandscope classifier retrain` or `rollback` in
another process (seen by watching the CURRENT file), the retrain schedule, or POST
/v1/retrain. Training and loading run in a thread; the swap is one reference assignment,
so a batch is classified wholly by one version and says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.classifier.label_store import LabelStore
from services.classifier.model import store
from services.classifier.model.text_model import TextModel
from services.classifier.rules import RuleSet
from services.classifier.training import TrainingSources, load_or_train, train_version

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelInUse:
    version: str
    model: TextModel
    rules: RuleSet


def in_use(version: str, model: TextModel) -> ModelInUse:
    return ModelInUse(version, model, RuleSet.from_taxonomy(model.taxonomy))


class ModelKeeper:
    def __init__(
        self,
        *,
        model_dir: Path,
        sources: TrainingSources,
        labels: LabelStore,
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
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def current(self) -> ModelInUse:
        if self._current is None:
            raise RuntimeError("the model is not loaded yet: call start() first")
        return self._current

    async def start(self) -> None:
        version, model = await asyncio.to_thread(load_or_train, self._model_dir, self._sources)
        self._swap(in_use(version, model))
        self._labels_at_last_training = self._labels.count()
        if self._watch_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._watch(), name="model-watch"))
        if self._retrain_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._schedule(), name="model-retrain"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # The label store's connection belongs to the event loop (the consumer writes through
    # it), so it is only used from here; training opens its own connection in its thread.

    async def retrain(self, reason: str) -> str:
        """Train on seed + labels now, save the version, and classify with it from now on."""
        async with self._retrain_lock:
            labels = self._labels.count()
            started = time.perf_counter()
            trained = await asyncio.to_thread(
                train_version, self._model_dir, self._sources, reason=reason
            )
            self._labels_at_last_training = labels
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

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval_s)
            try:
                await self.refresh()
            except Exception:  # a half-written or bad version must not stop the stream
                log.exception("could not load the current model version; keeping the old one")

    async def refresh(self) -> bool:
        """Load CURRENT if another process changed it (retrain or rollback); True if swapped."""
        version = await asyncio.to_thread(store.current_version, self._model_dir)
        if version is None or self._current is None or version == self._current.version:
            return False
        model = await asyncio.to_thread(store.load, self._model_dir, version)
        self._swap(in_use(version, model))
        log.info("now classifying with model version %s", version)
        return True

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(self._retrain_interval_s)
            try:
                if self._labels.count() > self._labels_at_last_training:
                    await self.retrain("schedule")
            except Exception:
                log.exception("scheduled retraining failed; the live model is unchanged")
