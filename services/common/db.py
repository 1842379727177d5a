"""PostgreSQL access: one asyncpg pool per service, pinned to the service's own schema."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

# What `pool.acquire()` yields and what `asyncpg.connect()` returns: both work alike.
Connection = asyncpg.Connection | PoolConnectionProxy

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (roll back an open
    transaction, drop listener callbacks).

    asyncpg's default also runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release, a round trip per checkout. Pooled connections never
    change session state: advisory locks are transaction-scoped, there are no cursors
    outside transactions, settings come from the connection's start-up parameters, and
    the one LISTEN (ChannelListener) removes itself before it releases its connection.
    """


async def create_pool(
    dsn: str, schema: str, *, size_max: int = 10, command_timeout_s: float = 10.0
) -> asyncpg.Pool:
    """Open a pool whose connections resolve unqualified names in `schema` first."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size_max,
        command_timeout=command_timeout_s,
        timeout=10.0,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"search_path": f"{check_schema_name(schema)},public"},
    )
    if pool is None:  # asyncpg types allow None only for a never-awaited pool
        raise RuntimeError("asyncpg returned no pool")
    return pool


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(*packages: str) -> list[Migration]:
    """Read `NNN_name.sql` files from each package, in version order.

    The shared runtime's tables (event store, inbox) come first as version 0xx; a
    service's own migrations number from 100.
    """
    migrations: list[Migration] = []
    for package in packages:
        for entry in importlib.resources.files(package).iterdir():
            match = _MIGRATION_FILE.match(entry.name)
            if match:
                migrations.append(
                    Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8"))
                )
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration versions in {packages}")
    return sorted(migrations, key=lambda m: m.version)


async def apply_migrations(dsn: str, schema: str, migrations: list[Migration]) -> list[int]:
    """Apply the migrations `schema` lacks, each in its own transaction. Returns versions applied.

    An advisory lock serialises concurrent starts of the same service.
    """
    check_schema_name(schema)
    connection: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10.0)
    applied: list[int] = []
    try:
        await connection.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        try:
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                row["version"]
                for row in await connection.fetch(f"SELECT version FROM {schema}.schema_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    continue
                async with connection.transaction():
                    await connection.execute(f"SET LOCAL search_path TO {schema}, public")
                    await connection.execute(migration.sql.replace("{schema}", schema))
                    await connection.execute(
                        f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration.version)
                log.info("migration_applied", schema=schema, version=migration.version)
        finally:
            await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}")
    finally:
        await connection.close()
    return applied


class ChannelListener:
    """Calls `on_payload` with the payload of every NOTIFY on `channel`.

    A NOTIFY is delivered only after the notifying transaction commits, so whoever is
    called finds the committed rows. Holds one pooled connection while started.
    """

    def __init__(self, pool: asyncpg.Pool, channel: str, on_payload: Callable[[str], None]) -> None:
        self._pool = pool
        self._channel = channel
        self._on_payload = on_payload
        self._connection: PoolConnectionProxy | None = None

    async def start(self) -> None:
        self._connection = await self._pool.acquire()
        await self._connection.add_listener(self._channel, self._on_notify)

    async def stop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.remove_listener(self._channel, self._on_notify)
            await self._pool.release(self._connection)
            self._connection = None

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_payload(str(payload))
