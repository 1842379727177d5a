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
        default=3, ge=1, le=256, description="Partitions of topics payrail creates."
    )
    kafka_request_timeout_ms: int = Field(
        default=10_000, ge=100, le=120_000, description="Timeout of one Kafka request."
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=5_000,
        description=(
            "Longest a fetch waits for new records. Apache Kafka answers as soon as records "
            "arrive; the embedded broker waits the whole time, so `make run` uses 20 with it."
        ),
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/payrail",
        validation_alias=AliasChoices("DATABASE_URL", "PAYRAIL_DATABASE_URL"),
        description="PostgreSQL DSN. Each service uses its own schema in it.",
    )
    database_pool_size_max: int = Field(
        default=10, ge=1, le=100, description="Connections in the service's pool at most."
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
        default=500, ge=10, le=60_000, description="Relay poll period when no NOTIFY arrives."
    )
    consumer_retry_count_max: int = Field(
        default=5, ge=1, le=100, description="Attempts on a transient error before rewinding."
    )
