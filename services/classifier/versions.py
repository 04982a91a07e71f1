"""Model versions for the whole fleet: one trainer at a time, and a version published only by
the holder of the training lease.

Every writer of a trained version (the service's start, its schedule and POST /v1/retrain,
and `demandscope classifier train|retrain`) goes through ``training_lease`` and ``publish``:
the lease row in the classifier database says who trains, it is renewed while training runs
(a crashed holder's lease simply expires), and the new version becomes current in the same
transaction that checks the lease is still held, so a holder that stalled past its lease
publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from services.classifier.db.model_versions import Lease, LeaseLost, ModelVersions, NewVersion
from services.classifier.model import store
from services.classifier.model.text_model import FORMAT, TextModel

log = logging.getLogger(__name__)

TRAINING_LEASE = "training"


class RetrainInProgress(RuntimeError):
    """A retraining is already running somewhere in the fleet; this one was not started."""


def holder_name(prefix: str | None = None) -> str:
    """Who holds a lease or wrote a version: the instance (or host), the process, and a nonce
    (two keepers in one process are two holders)."""
    return f"{prefix or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class HeldLease:
    lease: Lease
    ttl: timedelta
    lost: bool = field(default=False)


@contextlib.asynccontextmanager
async def training_lease(
    versions: ModelVersions, holder: str, ttl: timedelta
) -> AsyncIterator[HeldLease]:
    """Hold the fleet's training lease for the block, renewed every third of ``ttl``.

    Raises ``RetrainInProgress`` when another holder has it."""
    lease = await versions.take_lease(TRAINING_LEASE, holder, ttl)
    if lease is None:
        other = await versions.lease_holder(TRAINING_LEASE)
        who = f" by {other.holder} (lease until {other.expires_at:%H:%M:%S} UTC)" if other else ""
        raise RetrainInProgress(f"a retraining is already running{who}")
    held = HeldLease(lease, ttl)

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl.total_seconds() / 3)
            try:
                renewed = await versions.renew_lease(held.lease, ttl)
            except DBAPIError as error:  # try again; publish checks the lease anyway
                log.warning("could not renew the training lease: %r", error)
                continue
            if renewed is None:
                held.lost = True
                log.error("the training lease of %s expired; its version will not be used", holder)
                return
            held.lease = renewed

    renewal = asyncio.create_task(renew(), name="training-lease-renewal")
    try:
        yield held
    finally:
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        if not held.lost:
            try:
                await versions.release_lease(held.lease)
            except DBAPIError as error:  # it expires by itself
                log.warning("could not release the training lease: %r", error)


async def publish(
    versions: ModelVersions,
    held: HeldLease,
    model: TextModel,
    metadata: dict[str, Any],
    *,
    reason: str,
    make_current: bool = True,
) -> str:
    """Store ``model`` as a new version and make it the fleet's current one, if the lease is
    still held (``LeaseLost`` otherwise); return the version."""
    payload = await asyncio.to_thread(store.dumps, model)
    version = store.version_name(payload, versions.now())
    described = {"version": version, "created_at": versions.now().isoformat(), **metadata}
    await versions.add(
        NewVersion(
            version=version,
            created_by=held.lease.holder,
            reason=reason,
            content_hash=store.content_hash(payload),
            model_format=FORMAT,
            metadata=described,
            payload=payload,
        ),
        make_current=make_current,
        lease=held.lease,
        lease_ttl=held.ttl,
    )
    return version


async def load_version(versions: ModelVersions, version: str) -> tuple[TextModel, dict[str, Any]]:
    """Read and unpickle one stored version (in a thread: a model is megabytes)."""
    stored = await versions.get(version)
    model = await asyncio.to_thread(
        store.loads,
        stored.payload,
        where=f"model version {version}",
        expected_hash=stored.content_hash,
    )
    return model, stored.metadata


async def import_directory(versions: ModelVersions, model_dir: Path | str, by: str) -> int:
    """Copy the versions of an earlier release's model directory into the database (those not
    there yet); its CURRENT becomes current only if nothing is. Returns how many were new."""
    found = await asyncio.to_thread(store.read_directory, model_dir)
    if not found.versions:
        return 0
    added = await versions.import_versions(
        [
            NewVersion(
                version=v.version,
                created_by=by,
                reason=f"import from {model_dir}",
                content_hash=store.content_hash(v.payload),
                model_format=int(v.metadata.get("model_format") or 0),
                metadata=v.metadata,
                payload=v.payload,
                created_at=_parse_time(v.metadata.get("created_at")),
            )
            for v in found.versions
        ],
        current=found.current,
        by=by,
    )
    return added


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


__all__ = [
    "TRAINING_LEASE",
    "HeldLease",
    "LeaseLost",
    "RetrainInProgress",
    "holder_name",
    "import_directory",
    "load_version",
    "publish",
    "training_lease",
]
