"""Classifier settings: environment variables prefixed DEMANDSCOPE_CLASSIFIER_ (the fields
every service has come from ``ServiceSettings``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.auth.settings import AuthSettings
from shared.kafka.settings import KafkaSettings
from shared.service.settings import ServiceSettings

if TYPE_CHECKING:
    from services.classifier.model.prior_shift import DemandPrior

SHIPPED_DATA = Path(__file__).parent / "data"
SEED_EXAMPLES = SHIPPED_DATA / "seed_examples.csv"
TAXONOMY = SHIPPED_DATA / "taxonomy.yaml"
GENERAL_CORPUS = SHIPPED_DATA / "general_corpus.csv"


class ClassifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMANDSCOPE_CLASSIFIER_", extra="ignore")

    port: int = Field(default=8001, ge=0, le=65535, description="Port of the HTTP server.")
    source_name: str = Field(default="demandscope-classifier", description="CloudEvents source.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///.run/classifier.db",
        description="People's labels, the demand texts they refer to, and the model versions "
        "every instance shares (SQLAlchemy URL); PostgreSQL when several instances run. "
        "Migrate with `demandscope classifier migrate`.",
    )
    group_id: str = Field(default="demandscope-classifier", description="Kafka consumer group.")
    transactional_id: str | None = Field(
        default=None,
        description="Prefix of the Kafka transactional ids, the same on every instance of one "
        "consumer group: each input partition has its own id, <prefix>-<topic>-<partition>, so "
        "that whoever is assigned a partition fences its previous owner. Unset: the group id. "
        "Never per instance.",
    )
    instance_id: str | None = Field(
        default=None,
        description="This instance's name in the consumer group (static membership, KIP-345): "
        "the same across its restarts, unique in the group (a StatefulSet pod's name). A "
        "restarted instance takes its partitions back at once instead of waiting for its dead "
        "self's session to time out; one that stops keeps them until its session times out. "
        "Unset: `demandscope classifier serve` uses <host name>:<port>; empty: none.",
    )
    model_dir: Path = Field(
        default=Path(".run/models"),
        description="A model directory of an earlier release (CURRENT + versions/): imported "
        "into the database at start when the database holds no model version yet.",
    )
    max_batch: int = Field(default=500, ge=1, description="Records per transaction at most.")
    model_worker: bool = Field(
        default=False,
        description="Predict a backlog's next poll in a worker process (the second core) while "
        "this one judges and commits the poll before; the service never waits for it to "
        "start, and predicts here whenever it cannot (not up yet, gone, another model version). "
        "Turn it on where the host has a core to spare and ~300 MB more memory for the "
        "worker's copy of the model: +17-28% demands/s through a backlog on a quiet 2-core "
        "machine, but slower when the other core is busy (docs/performance.md). Off (the "
        "default): every prediction in the service's process.",
    )
    fetch_wait_ms: int = Field(
        default=10,
        ge=0,
        le=500,
        description="How long a fetch waits for more demands when fewer than a megabyte are "
        "waiting (a backlog never waits). Each poll costs ~7 ms of CPU (a transaction, a "
        "prediction): 10 ms cut CPU a demand by a quarter at 1,000/s for ~9 ms of latency; "
        "0 answers at once.",
    )
    review_threshold: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Below this confidence a demand is marked needs_review.",
    )
    unknown_threshold: float = Field(
        default=0.55,
        ge=0.5,
        le=1,
        description="Below this value/failure probability the demand type is 'unknown'.",
    )
    context_window_days: float = Field(
        default=30, gt=0, description="How long a customer's demands and cases are remembered."
    )
    repeat_window_days: float = Field(
        default=14,
        gt=0,
        description="A demand for a purpose fulfilled this recently is a repeat (failure).",
    )
    max_demands_per_customer: int = Field(
        default=50, ge=1, description="Context kept per customer at most (demands and cases)."
    )
    seed_examples: Path | None = Field(
        default=SEED_EXAMPLES,
        description="The organisation's labelled examples (CSV); rows of purposes outside the "
        "taxonomy teach value/failure only. Empty (or a header-only file) for a cold start "
        "from the taxonomy alone.",
    )
    taxonomy: Path | None = Field(
        default=TAXONOMY,
        description="The organisation's taxonomy YAML: its purposes come only from here and its "
        "labelled examples. A model trained on another taxonomy is replaced at start.",
    )
    general_corpus: Path | None = Field(
        default=GENERAL_CORPUS,
        description="Value and failure examples from many sectors (CSV), which teach "
        "value/failure only, never purposes; empty to train without.",
    )
    label_weight: int = Field(
        default=5, ge=1, description="Each person's label counts as this many seed examples."
    )
    retrain_interval_s: float = Field(
        default=3600,
        ge=0,
        description="Retrain on seed + labels this often when new labels arrived (0: never).",
    )
    model_watch_interval_s: float = Field(
        default=2,
        ge=0,
        description="How often to read the database's current model version, to serve a "
        "version retrained or rolled back anywhere in the fleet (0: never).",
    )
    training_lease_s: float = Field(
        default=60,
        ge=5,
        description="The training lease: one trainer in the fleet holds it, renewed every "
        "third of this while it trains; a crashed trainer's lease expires after this long. "
        "Keep it well above the clock skew between machines.",
    )
    failure_estimate_timeout_s: float = Field(
        default=5,
        ge=0,
        description="Before each training, read the metrics service's audited failure share "
        "(purpose.metrics) for at most this long: validated estimates covering 90% of the "
        "value and failure demands set the value/failure prior; otherwise, or if the topic "
        "is missing, empty or "
        "unreachable, the labels' share does. 0: never read, the labels' share.",
    )
    failure_prior_min_demands: int = Field(
        default=200,
        ge=0,
        description="While the value/failure prior comes from neither the metrics service's "
        "audited estimate nor the organisation's own labels (own_prior_min_rows of them), "
        "estimate it from its recent unlabelled demands (black-box shift estimation, "
        "prior_shift.py) once this many were seen, then each time the demands seen have "
        "doubled (0: never).",
    )
    failure_prior_demands_read: int = Field(
        default=5000,
        ge=1,
        description="The newest demands' texts one estimate of the failure prior reads.",
    )
    failure_prior_every_max: int = Field(
        default=20000,
        ge=1,
        description="Re-estimate the failure prior from the demands at least every this many "
        "new demands, however many were seen before.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    def demand_prior(self) -> DemandPrior:
        """The failure prior's estimate from the demands, as the settings say."""
        # Here, not at the top: the model's modules import this one's paths.
        from services.classifier.model.prior_shift import DemandPrior

        return DemandPrior(
            min_texts=self.failure_prior_min_demands,
            read=self.failure_prior_demands_read,
            every_max=self.failure_prior_every_max,
        )

    @field_validator("seed_examples", "taxonomy", "general_corpus", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """``DEMANDSCOPE_CLASSIFIER_SEED_EXAMPLES=`` means none, not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value
