"""Settings shared by every service. Configuration comes only from the environment or `.env`.

Each service extends `ServiceSettings` with its own fields; every field documents its
default. `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` keep their conventional names, the
rest carry the `PAYRAIL_` prefix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYRAIL_", env_file=".env", extra="ignore", populate_by_name=True
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "PAYRAIL_KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated Kafka bootstrap servers.",
    )
    kafka_enable_idempotence: bool = Field(
        default=False,
        description=(
            "Use Kafka's idempotent producer. Off for the embedded broker, which rejects the "
            "handshake; on for Apache Kafka. Correctness never depends on it: consumers "
            "de-duplicate by event id."
        ),
    )
    kafka_topic_prefix: str = Field(
        default="", description="Prefix of every topic name, to share one cluster."
    )
    kafka_topic_partitions: int = Field(
        default=8,
        ge=1,
        le=256,
        description=(
            "Partitions of topics payrail creates: how many consumers (instances of a "
            "service, and batches within one) can work on a topic side by side. A topic "
            "that exists keeps its partitions."
        ),
    )
    kafka_request_timeout_ms: int = Field(
        default=10_000, ge=100, le=120_000, description="Timeout of one Kafka request."
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=5_000,
        description=(
            "Longest a consumer's fetch waits for new records while records flow. Apache "
            "Kafka answers as soon as records arrive; the embedded broker re-checks at half "
            "the remaining wait, so `make run` uses 20 with it."
        ),
    )
    kafka_fetch_max_wait_ms_idle: int = Field(
        default=1_000,
        ge=1,
        le=5_000,
        description=(
            "Longest a consumer's fetch waits once it has fetched nothing for a second: "
            "fewer fetches of idle partitions (the embedded broker's cost when idle), at the "
            "price of up to half of it in latency for the first record after a quiet spell."
        ),
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/payrail",
        validation_alias=AliasChoices("DATABASE_URL", "PAYRAIL_DATABASE_URL"),
        description="PostgreSQL DSN. Each service uses its own schema in it.",
    )
    database_pool_size_max: int = Field(
        default=16,
        ge=2,
        le=200,
        description=(
            "Connections in the service's pool at most: the consumer's concurrent batches, "
            "the relay and background loops, and HTTP requests share it."
        ),
    )
    database_command_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one SQL statement."
    )
    log_level: str = Field(default="INFO", description="Python log level name.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto renders JSON unless stderr is a terminal."
    )
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    outbox_batch_size_max: int = Field(
        default=500, ge=1, le=10_000, description="Messages the relay publishes per round at most."
    )
    outbox_poll_interval_ms: int = Field(
        default=500,
        ge=10,
        le=60_000,
        description=(
            "Relay poll period: how soon rows written by another process are published. "
            "Writers in the relay's own process wake it at once."
        ),
    )
    consumer_retry_count_max: int = Field(
        default=5,
        ge=1,
        le=100,
        description=(
            "Retries of a batch that failed with an error that may pass before its partition "
            "is reported held (an error log and a gauge). It is still retried after that: a "
            "transient error never skips a message."
        ),
    )
    consumer_retry_backoff_ms_initial: int = Field(
        default=50, ge=1, le=60_000, description="First wait before retrying a failed batch."
    )
    consumer_retry_backoff_ms_max: int = Field(
        default=5_000, ge=1, le=300_000, description="Longest wait between retries of a batch."
    )
    dead_letter_redrive_poll_interval_ms: int = Field(
        default=1_000,
        ge=10,
        le=60_000,
        description="How often a service looks for dead letters an operator asked to redrive.",
    )
    consumer_batch_size_max: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Records a consumer takes per fetch at most, across its partitions.",
    )
    consumer_concurrency_max: int = Field(
        default=8,
        ge=1,
        le=256,
        description=(
            "Partition batches a service applies at once, each in its own transaction on "
            "its own connection; the pool must have more connections than this."
        ),
    )
    background_loop_backoff_initial_s: float = Field(
        default=0.1,
        gt=0,
        le=60,
        description=(
            "Wait before restarting a background loop after its first crash; it doubles with "
            "each further crash in a row."
        ),
    )
    background_loop_backoff_s_max: float = Field(
        default=30.0,
        gt=0,
        le=3_600,
        description="Longest wait before restarting a background loop that keeps crashing.",
    )
    background_loop_healthy_after_s: float = Field(
        default=60.0,
        gt=0,
        le=3_600,
        description=(
            "A background loop that ran this long before crashing counts as recovered: its "
            "backoff starts again from the initial wait."
        ),
    )
    background_loop_down_unready_after_s: float = Field(
        default=10.0,
        gt=0,
        le=3_600,
        description=(
            "/readyz answers 503 while a background loop has been down (crashed and not yet "
            "restarted, or crashing again at once) for longer than this."
        ),
    )
    kafka_topic_replication_factor: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description=(
            "Copies of each partition of the topics payrail creates. Unset: 3 on a cluster "
            "of three brokers or more (and then min.insync.replicas 2), else 1."
        ),
    )
