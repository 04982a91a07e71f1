"""The model this instance classifies with right now, and how a new one replaces it without a
pause, on every instance of the fleet.

Model versions and the one current pointer live in the classifier database
(``db/model_versions.py``). A new current version comes from anywhere in the fleet: another
instance's retraining (schedule or POST /v1/retrain), `demandscope classifier retrain|rollback`,
or this instance. ``watch`` polls the pointer (one primary-key read every
``watch_interval_s``) and loads the version when it changed. Training and loading run in a
thread; the swap is one reference assignment, so a batch is classified wholly by one version
and says which.

One retraining at a time across the fleet: it holds the training lease (``versions.py``); a
caller that finds it held anywhere is told so (``RetrainInProgress``) instead of queueing.

``load`` runs in the service's ``build``; ``watch`` and ``retrain_on_schedule`` are background
tasks under the service's supervisor.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from services.classifier.db.model_versions import LeaseLost, ModelVersions, UnknownVersion
from services.classifier.db.repository import LabelRepository
from services.classifier.failure_share import EstimatedPrior
from services.classifier.model import store
from services.classifier.model.prior_shift import (
    DEMANDS,
    REPLACEABLE,
    DemandPrior,
    StoredRates,
    apply_demand_prior,
)
from services.classifier.model.text_model import TextModel
from services.classifier.rules import RuleSet
from services.classifier.taxonomy import TaxonomyError
from services.classifier.training import (
    RecentDemands,
    TrainingSources,
    failure_prior_metadata,
    read_recent_demands,
    train_model,
)
from services.classifier.versions import (
    TRAINING_LEASE,
    RetrainInProgress,
    import_directory,
    load_version,
    publish,
    training_lease,
)

log = logging.getLogger(__name__)

# What loading a version another process wrote can raise: the watch logs it and keeps the
# live model (anything else is a bug, and the supervisor sees it).
_UNLOADABLE = (
    store.ModelStoreError,
    UnknownVersion,
    DBAPIError,
    OSError,
    EOFError,
    pickle.UnpicklingError,
)

__all__ = [
    "ModelInUse",
    "ModelKeeper",
    "RetrainInProgress",
    "fingerprint",
    "in_use",
]


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


class ModelKeeper:
    def __init__(
        self,
        *,
        versions: ModelVersions,
        sources: TrainingSources,
        labels: LabelRepository,
        holder: str,
        watch_interval_s: float,
        retrain_interval_s: float,
        on_swap: Callable[[ModelInUse], None],
        lease_ttl_s: float = 60,
        import_dir: Path | None = None,
        on_poll: Callable[[str | None], None] | None = None,
        failure_estimate: Callable[[], Awaitable[EstimatedPrior]] | None = None,
        demand_prior: DemandPrior | None = None,
    ) -> None:
        """``failure_estimate``: reads the metrics service's audited failure share before each
        training (``failure_share.read_estimated_prior``, bounded, never raising); None:
        the prior comes from the labels. ``demand_prior``: when the prior is estimated from
        the organisation's recent demands (``estimate_prior_if_due``)."""
        self._versions = versions
        self._sources = sources
        self._labels = labels
        self._holder = holder
        self._watch_interval_s = watch_interval_s
        self._retrain_interval_s = retrain_interval_s
        self._on_swap = on_swap
        self._on_poll = on_poll
        self._failure_estimate = failure_estimate
        self._lease_ttl = timedelta(seconds=lease_ttl_s)
        self._import_dir = import_dir
        self._current: ModelInUse | None = None
        self._retrain_lock = asyncio.Lock()
        self._labels_at_current: int | None = None
        self._metadata_current: dict[str, Any] = {}
        self._demand_prior = demand_prior or DemandPrior()
        self._no_estimate: tuple[str, int] | None = None
        """The version whose estimate could not be made, and the demands kept then."""

    @property
    def current(self) -> ModelInUse:
        if self._current is None:
            raise RuntimeError("the model is not loaded yet: call load() first")
        return self._current

    @property
    def holder(self) -> str:
        """This instance's name in the lease and on the versions it writes."""
        return self._holder

    @property
    def versions(self) -> ModelVersions:
        return self._versions

    @property
    def demand_prior(self) -> DemandPrior:
        """When this keeper estimates the prior from the demands."""
        return self._demand_prior

    @property
    def retraining(self) -> bool:
        """True while this instance trains (the fleet's lease says whether any does)."""
        return self._retrain_lock.locked()

    async def load(self) -> None:
        """Serve the fleet's current version; train one (holding the lease) when there is
        none (a fresh database), when it was made by an older classifier, or when the
        taxonomy changed since it was trained (a changed taxonomy is logged and a model of
        the current one trained, so purposes are never stale). While another instance
        trains, wait for its version rather than train a second one.

        A model directory of an earlier release is imported first if the database holds
        no version yet."""
        if self._import_dir is not None and await self._versions.count() == 0:
            added = await import_directory(self._versions, self._import_dir, self._holder)
            if added:
                log.info("imported %d model versions from %s", added, self._import_dir)
        while True:
            reason = await self._use_current()
            if reason is None:
                return
            try:
                async with (
                    self._retrain_lock,
                    training_lease(self._versions, self._holder, self._lease_ttl) as held,
                ):
                    reason = await self._use_current(quiet=True)  # another may have finished
                    if reason is None:
                        return
                    labels_at = await self._labels.count()
                    labels = await self._labels.training_examples()
                    estimated = await self._estimated_prior()
                    demands = await self._recent_demands()
                    trained = await asyncio.to_thread(
                        train_model,
                        self._sources,
                        reason=reason,
                        labels=labels,
                        with_evaluation=False,
                        label_rows=labels_at,
                        estimated=estimated,
                        demands=demands.texts,
                        demand_prior=self._demand_prior,
                        with_rates=self._wants_rates(demands),
                    )
                    metadata = {**trained.metadata, **demands.metadata(trained.model)}
                    version = await publish(
                        self._versions, held, trained.model, metadata, reason=reason
                    )
            except (RetrainInProgress, LeaseLost) as busy:
                log.info("%s; waiting for its version", busy)
                await self._wait_for_training()
                continue
            log.info("trained model version %s (%s)", version, reason)
            self._swap(in_use(version, trained.model), labels_at, metadata)
            return

    async def _use_current(self, *, quiet: bool = False) -> str | None:
        """Swap to the fleet's current version if it suits this instance and return None;
        otherwise return why a new one must be trained."""
        version = await self._versions.current()
        if version is None:
            return "bootstrap"
        try:
            model, metadata = await load_version(self._versions, version)
        except store.OutdatedModel as error:
            if not quiet:
                log.warning("%s; training a new version now", error)
            return "outdated model"
        wanted = await asyncio.to_thread(self._sources.taxonomy_fingerprint)
        known = fingerprint(model)
        if self._sources.taxonomy is not None and wanted != known:
            if not quiet:
                log.warning(
                    "the taxonomy changed: model version %s was trained on taxonomy %s, "
                    "%s is now %s; training a new model from the current taxonomy",
                    version,
                    known,
                    self._sources.taxonomy,
                    wanted,
                )
            return "taxonomy changed"
        self._swap(in_use(version, model), _label_rows(metadata), metadata)
        return None

    async def _wait_for_training(self) -> None:
        """Until the lease is free again (its holder published, or crashed and it expired)."""
        pause = max(0.2, min(self._watch_interval_s or 1.0, 2.0))
        while True:
            if await self._versions.lease_holder(TRAINING_LEASE) is None:
                return
            await asyncio.sleep(pause)

    async def retrain(self, reason: str) -> str:
        """Train on seed + labels now, publish the version for the fleet, and classify with it
        from now on. Raises ``RetrainInProgress`` when a retraining runs anywhere in the fleet,
        and ``LeaseLost`` when this one stalled past its lease (nothing was published)."""
        if self._retrain_lock.locked():
            raise RetrainInProgress("a retraining is already running on this instance")
        async with (
            self._retrain_lock,
            training_lease(self._versions, self._holder, self._lease_ttl) as held,
        ):
            count = await self._labels.count()
            labels = await self._labels.training_examples()
            started = time.perf_counter()
            estimated = await self._estimated_prior()
            demands = await self._recent_demands()
            trained = await asyncio.to_thread(
                train_model,
                self._sources,
                reason=reason,
                labels=labels,
                label_rows=count,
                estimated=estimated,
                demands=demands.texts,
                demand_prior=self._demand_prior,
                with_rates=self._wants_rates(demands),
            )
            metadata = {**trained.metadata, **demands.metadata(trained.model)}
            version = await publish(self._versions, held, trained.model, metadata, reason=reason)
        self._swap(in_use(version, trained.model), count, metadata)
        log.info(
            "retrained (%s) with %d labels in %.1fs: version %s is current for the fleet",
            reason,
            trained.labels,
            time.perf_counter() - started,
            version,
        )
        return version

    async def _estimated_prior(self) -> EstimatedPrior | None:
        return None if self._failure_estimate is None else await self._failure_estimate()

    async def _recent_demands(self) -> RecentDemands:
        return await read_recent_demands(self._labels, self._demand_prior)

    def _wants_rates(self, demands: RecentDemands) -> bool:
        """Whether a training measures the error rates (3 more fits, about 3x its CPU): only
        once the demands' minimum was seen, when an estimate can use them. Before (the first
        training on a fresh database, retrainings of a young organisation) the version goes
        without them and ``estimate_prior_if_due`` retrains once with them at the minimum.
        ``train_model`` skips them anyway when the prior is an audited estimate or labels."""
        wanted = self._demand_prior
        return wanted.min_texts > 0 and demands.kept >= wanted.min_texts

    async def _needs_rates(self, metadata: dict[str, Any]) -> bool:
        if "failure_prior_rates" in metadata or self._demand_prior.min_texts <= 0:
            return False
        if metadata.get("failure_prior_source") not in REPLACEABLE:
            return False
        return await self._labels.count_texts() >= self._demand_prior.min_texts

    async def _prior_due(self, metadata: dict[str, Any]) -> StoredRates | None:
        """The current version's stored rates when its prior may come from the demands and
        enough new ones were seen since its estimate (``DemandPrior.due``); else None."""
        source = metadata.get("failure_prior_source")
        stored = StoredRates.from_dict(metadata.get("failure_prior_rates"))
        if stored is None or source not in REPLACEABLE or self._demand_prior.min_texts <= 0:
            return None
        last = metadata.get("failure_prior_demands_seen")
        since = _moment(metadata.get("failure_prior_demands_until"))
        seen = await self._labels.count_texts(since=since)
        estimated = source == DEMANDS and isinstance(last, int)
        return stored if self._demand_prior.due(seen, last if estimated else None) else None

    async def estimate_prior_if_due(self) -> str | None:
        """Re-estimate the value/failure prior from the organisation's newest demands when
        the current version's prior may come from them (not an audited estimate, not its own
        labels) and enough new demands were seen: the first estimate at
        ``DemandPrior.min_texts``, then each time the demands seen have doubled (at least
        every ``every_max``). The same fit, set back to the prior its stored error rates were
        measured at, then to the estimate, published as a new version through the lease
        (cheaper than a retraining: one prediction of the texts). Returns the version.

        A version without error rates (no ``failure_prior_rates`` key: trained before the
        minimum of demands was seen, or by an earlier release) is retrained once, with them,
        when the minimum was seen.

        An estimate that cannot be made (calls that barely separate the classes) is tried
        again on that version only once the demands seen have doubled since (as after an
        estimate), not every round."""
        if await self._needs_rates(self._metadata_current):
            return await self.retrain("demands: error rates")
        if await self._backing_off():
            return None
        if await self._prior_due(self._metadata_current) is None:
            return None
        if self._retrain_lock.locked():
            raise RetrainInProgress("a retraining is already running on this instance")
        async with (
            self._retrain_lock,
            training_lease(self._versions, self._holder, self._lease_ttl) as held,
        ):
            await self.refresh()  # another instance may have published meanwhile
            based_on = self.current.version
            stored = await self._prior_due(self._metadata_current)
            if stored is None:
                return None
            model, metadata = await load_version(self._versions, based_on)  # a copy to change
            demands = await self._recent_demands()
            share = await asyncio.to_thread(
                apply_demand_prior,
                model,
                demands.texts,
                stored,
                min_texts=self._demand_prior.min_texts,
            )
            if share is None:
                self._no_estimate = (based_on, demands.kept)
                log.info(
                    "no failure prior from %d demands; keeping the prior, trying again when "
                    "the demands seen have doubled",
                    len(demands.texts),
                )
                return None
            described = {k: v for k, v in metadata.items() if k not in ("version", "created_at")}
            described |= {
                "reason": "demands",
                "based_on_version": based_on,
                **failure_prior_metadata(model),
                **demands.metadata(model),
            }
            version = await publish(self._versions, held, model, described, reason="demands")
        self._swap(in_use(version, model), _label_rows(described), described)
        log.info(
            "failure prior %.3f from %d demands: version %s is current for the fleet",
            share,
            len(demands.texts),
            version,
        )
        return version

    async def _backing_off(self) -> bool:
        """Whether the current version's last estimate could not be made and too few demands
        were seen since (``DemandPrior.due`` from the demands kept then)."""
        if self._no_estimate is None:
            return False
        version, kept = self._no_estimate
        if version != self.current.version:
            self._no_estimate = None
            return False
        return not self._demand_prior.due(await self._labels.count_texts() - kept, kept)

    def _swap(self, model: ModelInUse, labels_at: int | None, metadata: dict[str, Any]) -> None:
        self._current = model
        self._labels_at_current = labels_at
        self._metadata_current = metadata
        # The model and the libraries are some 200,000 long-lived objects that every full
        # collection walked again while batches allocate (the collector took 90 µs of CPU
        # per demand, 26 frozen): frozen, collections walk only what came after.
        gc.freeze()
        self._on_swap(model)

    async def watch(self) -> None:
        """Background task: swap to a version made current anywhere in the fleet."""
        while True:
            await asyncio.sleep(self._watch_interval_s)
            try:
                await self.refresh()
            except _UNLOADABLE as error:  # a bad version or a database away: keep serving
                log.error(
                    "could not load the current model version (%r); keeping the old one", error
                )

    async def refresh(self) -> bool:
        """Load the fleet's current version if it changed (a retraining anywhere, a rollback);
        True if swapped."""
        version = await self._versions.current()
        if self._on_poll is not None:
            self._on_poll(version)
        if version is None or self._current is None or version == self._current.version:
            return False
        model, metadata = await load_version(self._versions, version)
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
        self._swap(in_use(version, model), _label_rows(metadata), metadata)
        if self._on_poll is not None:
            self._on_poll(version)
        log.info("now classifying with model version %s", version)
        return True

    async def retrain_on_schedule(self) -> None:
        """Background task: ``retrain_if_new_labels`` every ``retrain_interval_s``."""
        while True:
            await asyncio.sleep(self._retrain_interval_s)
            try:
                await self.retrain_if_new_labels()
            except (RetrainInProgress, LeaseLost) as busy:
                log.info("scheduled retraining skipped: %s", busy)
            except _UNLOADABLE as error:  # the database is away: try again next round
                log.error("scheduled retraining skipped: %r", error)

    async def retrain_if_new_labels(self) -> str | None:
        """One round of the schedule: retrain when labels arrived since the fleet's current
        version was trained, else re-estimate the failure prior from the demands when due
        (``estimate_prior_if_due``), and return the new version. Every instance checks; the
        first to take the lease trains, the others then serve its version, which knows those
        labels and demands, and do nothing."""
        await self.refresh()
        known = self._labels_at_current
        if known is None:  # a version that does not say: count from now on
            self._labels_at_current = await self._labels.count()
            return await self.estimate_prior_if_due()
        if await self._labels.count() <= known:
            return await self.estimate_prior_if_due()
        return await self.retrain("schedule")


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _label_rows(metadata: dict[str, object]) -> int | None:
    rows = metadata.get("label_rows")
    return rows if isinstance(rows, int) else None
