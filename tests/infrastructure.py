"""Real infrastructure for tests: a Kafka-protocol broker and a PostgreSQL server.

With a reachable Docker engine the fixtures use testcontainers (Kafka in KRaft mode and
PostgreSQL images). Without one they start the embedded Tansu broker and use the
PostgreSQL named by PAYRAIL_TEST_DATABASE_URL, else the one on 127.0.0.1:5432, else an
embedded pgserver. Either way the tests talk to real servers over real connections.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.common.infrastructure import (
    EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    free_port,
    port_is_open,
    start_embedded_broker,
    start_embedded_postgres,
    stop_embedded_postgres,
    stop_process,
)

# testcontainers' KafkaContainer drives the Confluent image (Apache Kafka 3.6 in KRaft mode).
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
POSTGRES_IMAGE = "postgres:16-alpine"


def docker_is_usable() -> bool:
    if os.environ.get("PAYRAIL_TEST_DOCKER", "auto") == "never" or not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


@contextlib.contextmanager
def kafka_bootstrap_servers() -> Iterator[tuple[str, bool]]:
    """Yield (bootstrap servers, whether it is Apache Kafka rather than the embedded broker)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], True
        return
    if docker_is_usable():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
            yield kafka.get_bootstrap_server(), True
        return
    port = free_port()
    with tempfile.TemporaryFile() as broker_log:
        process = start_embedded_broker(port, log_file=broker_log)
        try:
            yield f"127.0.0.1:{port}", False
        finally:
            stop_process(process)


def kafka_client_settings(bootstrap: str, is_apache_kafka: bool) -> dict[str, object]:
    """Settings that fit the broker the tests run against."""
    return {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_enable_idempotence": is_apache_kafka,
        "kafka_fetch_max_wait_ms": 500 if is_apache_kafka else EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    }


@contextlib.contextmanager
def postgres_admin_dsn() -> Iterator[str]:
    """Yield a DSN with the right to create databases."""
    if os.environ.get("PAYRAIL_TEST_DATABASE_URL"):
        yield os.environ["PAYRAIL_TEST_DATABASE_URL"]
        return
    if docker_is_usable():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as postgres:
            yield postgres.get_connection_url()
        return
    if port_is_open("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    data_dir = Path(tempfile.mkdtemp(prefix="payrail-pg-"))
    dsn, handle = start_embedded_postgres(data_dir)
    try:
        yield dsn
    finally:
        stop_embedded_postgres(handle)
        shutil.rmtree(data_dir, ignore_errors=True)


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at `database` instead of its own."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))
