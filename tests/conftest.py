"""Shared fixtures: a real local Kafka broker and a throwaway PostgreSQL cluster per session.

* ``kafka_bootstrap`` - a broker of our own (devstack/kafka.py) on free ports, data in
  ``.run/test-kafka-<pid>`` (this session's own), stopped and deleted at session end. Never port
  9092, so it does not collide with a ``make run`` broker. Brokers and clusters left by killed
  sessions (their owner pid is gone) are reaped at session start (devstack/leftovers.py).
* ``postgres_url`` - a fresh cluster (devstack/postgres.py), removed at session end. Nothing is
  installed here (``make setup`` does that): without PostgreSQL the tests are skipped loudly -
  or fail when ``CI=true``.
* ``sqlite_url`` / ``database_url`` (parametrized over sqlite + postgresql).
* ``topic_factory`` / ``unique_group`` - per-test isolation on the shared broker.
* ``seed_model`` - the shipped recipe's model (seed set, taxonomy, general corpus), trained
  once a session: the classifier's tests and the end-to-end tests store it as the current
  version instead of each service training it again at start (~12 s of CPU each).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devstack import kafka as local_kafka  # noqa: E402
from devstack import leftovers  # noqa: E402
from devstack import postgres as local_postgres  # noqa: E402
from tests.support.removal import remove_in_background, resume_removals  # noqa: E402

if TYPE_CHECKING:
    from services.classifier.training import TrainedModel
    from shared.kafka.settings import KafkaSettings

TopicFactory = Callable[..., Awaitable[str]]
TEST_MIN_SESSION_TIMEOUT_MS = 1_000  # the session broker's group.min.session.timeout.ms


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _worker_suffix() -> str:
    # Per process, so that two test sessions on one machine never share a broker's data.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"-{worker}-{os.getpid()}" if worker else f"-{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# Started early: while the whole suite is collected
# ---------------------------------------------------------------------------------------------

# The broker and the cluster a plain ``pytest`` (the testpaths: the whole suite) is sure to
# ask for, started in threads at session start so that their start-up (a JVM, an initdb:
# several seconds, mostly on the other core) overlaps the collection (~10 s of imports)
# instead of holding up the first test that asks. A run of chosen paths starts them when
# (and if) a test asks, as before. The fixtures take them from here.
_EARLY: dict[str, concurrent.futures.Future[Any]] = {}


def _clear_leftovers() -> None:
    for line in leftovers.reap_leftovers(ROOT / ".run"):  # what killed sessions left behind
        warnings.warn(line, stacklevel=1)
    resume_removals(ROOT / ".run")


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return
    if config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    _clear_leftovers()
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="session-start")
    _EARLY["kafka"] = pool.submit(_start_kafka)
    _EARLY["postgres"] = pool.submit(_start_postgres)
    pool.shutdown(wait=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Started early, never asked for (every test needing them deselected): stopped here.
    for name, early in list(_EARLY.items()):
        del _EARLY[name]
        try:
            started = early.result()
        except Exception:  # it did not start: nothing is left running
            continue
        if name == "kafka":
            _stop_kafka(started)
        else:
            _stop_postgres(started[0])


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------


def _start_kafka() -> local_kafka.LocalKafkaConfig:
    """The session's broker, started on free ports with clean data (LocalKafkaError if not)."""
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(
        root=ROOT, run_dir=leftovers.claim(ROOT / ".run" / f"test-kafka{_worker_suffix()}")
    )
    # The test broker alone accepts session timeouts down to TEST_MIN_SESSION_TIMEOUT_MS (the
    # broker's default floor is 6 s): a test that pauses a consumer until the group drops it
    # (tests/support/echo_worker.py) waits one session timeout by design. The services'
    # own 10 s is above either floor, so nothing else changes.
    cfg.extra_properties["group.min.session.timeout.ms"] = str(TEST_MIN_SESSION_TIMEOUT_MS)
    local_kafka.wipe(cfg)
    local_kafka.start(cfg, timeout=120)
    return cfg


def _stop_kafka(cfg: local_kafka.LocalKafkaConfig) -> None:
    try:
        # Killed, not shut down: its data is deleted next, and a controlled shutdown of
        # the thousands of partitions a session leaves takes the whole 30 s allowed.
        local_kafka.stop(cfg, timeout=0)
    except local_kafka.LocalKafkaError as error:  # pragma: no cover - best effort
        warnings.warn(f"could not stop the test Kafka broker: {error}", stacklevel=1)
    else:
        remove_in_background(cfg.run_path)


@pytest.fixture(scope="session")
def kafka_config() -> Iterator[local_kafka.LocalKafkaConfig]:
    """The running test broker's config (started on free ports, clean data, stopped at the end)."""
    early = _EARLY.pop("kafka", None)
    try:
        if early is not None:
            cfg = early.result()
        else:
            _clear_leftovers()
            cfg = _start_kafka()
    except local_kafka.LocalKafkaError as error:
        pytest.fail(f"could not start the local Kafka broker: {error}", pytrace=False)
    try:
        yield cfg
    finally:
        _stop_kafka(cfg)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_config: local_kafka.LocalKafkaConfig) -> str:
    """``host:port`` of the session's real Kafka broker."""
    return kafka_config.bootstrap


@pytest.fixture
def unique_group() -> str:
    """A consumer group id nobody else uses."""
    return f"test-group-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> TopicFactory:
    """``await topic_factory(prefix="t", partitions=3, config={...})`` -> new unique topic name.

    The broker is wiped every session, so topics are not deleted afterwards.
    """

    async def create(
        prefix: str = "test",
        partitions: int = 3,
        config: dict[str, str] | None = None,
    ) -> str:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, partitions, 1, topic_configs=dict(config or {}))]
            )
        finally:
            await admin.close()
        errors = [(err[0], err[1]) for err in getattr(response, "topic_errors", []) if err[1] != 0]
        if errors:
            raise RuntimeError(f"creating topic {name} failed: {errors}")
        return name

    return create


# ---------------------------------------------------------------------------------------------
# databases
# ---------------------------------------------------------------------------------------------


def _start_postgres() -> tuple[local_postgres.LocalPostgresConfig, str]:
    """The session's cluster and its URL (LocalPostgresError if it cannot start)."""
    cfg = local_postgres.LocalPostgresConfig(
        root=ROOT, run_dir=leftovers.claim(ROOT / ".run" / f"test-postgres{_worker_suffix()}")
    )
    try:
        return cfg, local_postgres.start(cfg)
    except local_postgres.LocalPostgresError:
        shutil.rmtree(cfg.run_path, ignore_errors=True)
        raise


def _stop_postgres(cfg: local_postgres.LocalPostgresConfig) -> None:
    local_postgres.stop(cfg)
    shutil.rmtree(cfg.run_path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL (postgresql+asyncpg) of a throwaway PostgreSQL database for the session."""
    early = _EARLY.pop("postgres", None)
    try:
        cfg, url = early.result() if early is not None else _start_postgres()
    except local_postgres.LocalPostgresError as error:
        message = (
            "\n" + "!" * 78 + "\n"
            f"!!! PostgreSQL is NOT available, PostgreSQL tests are SKIPPED: {error}\n" + "!" * 78
        )
        if _in_ci():
            pytest.fail(message, pytrace=False)
        warnings.warn(message, pytest.PytestWarning, stacklevel=1)
        pytest.skip(message)
    try:
        yield url
    finally:
        _stop_postgres(cfg)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh SQLite file database (aiosqlite driver)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> str:
    """A new, empty database of its own on the session's PostgreSQL cluster."""
    import asyncio
    import concurrent.futures

    from tests.support.databases import create_databases

    name = f"test_{uuid.uuid4().hex[:12]}"
    # In a thread of its own: a session fixture (Playwright's sync API) may keep an event
    # loop running in this one, where asyncio.run refuses to start another.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, create_databases(postgres_url, [name])).result()[name]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL, each with an empty database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("fresh_postgres_url"))


# ---------------------------------------------------------------------------------------------
# demandscope topics
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Settings whose topics (every demandscope topic, 2 partitions) belong to this test alone."""
    from tests.support.kafka_io import with_own_topics

    return await with_own_topics(kafka_bootstrap, partitions=2)


@pytest.fixture(scope="session")
def seed_model() -> TrainedModel:
    """A model trained once per session on the shipped seed data (a few seconds)."""
    from services.classifier.training import TrainingSources, train_model

    return train_model(TrainingSources(), reason="test", with_evaluation=False)


@pytest.fixture
def private_kafka() -> Iterator[local_kafka.LocalKafkaConfig]:
    """A broker for this test alone, for tests that stop and start it."""
    run_dir = leftovers.claim(ROOT / ".run" / f"private-kafka-{uuid.uuid4().hex[:8]}")
    cfg = local_kafka.LocalKafkaConfig.on_free_ports(root=ROOT, run_dir=run_dir, heap="384m")
    try:
        local_kafka.start(cfg, timeout=120)
        yield cfg
    finally:
        local_kafka.stop(cfg)
        shutil.rmtree(cfg.run_path, ignore_errors=True)
