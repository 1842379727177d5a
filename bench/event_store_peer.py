"""Appending events: payrail's event store next to the `eventsourcing` library's.

`make bench` calls `measure_event_store_peer`; `python -m bench.event_store_peer` runs it
alone (DATABASE_URL, else PostgreSQL on 127.0.0.1:5432).

Both systems append the same events to the same PostgreSQL server, in a scratch database
that is created for the run and dropped after it:

- payrail: `append_events` (services/common/event_store.py) inside one transaction per
  append, on a pool from `create_pool`, into the `event_store` table of the shared
  runtime's migrations (the outbox columns, the unique event id, the stream version
  constraint, the indexes and the per-statement NOTIFY trigger included);
- the peer: an `eventsourcing` Application on its PostgreSQL persistence module
  (`eventsourcing.postgres`, psycopg 3 with its connection pool), saving aggregates whose
  events carry the same JSON document as payrail's event body. It runs twice: in its
  fastest configuration (`POSTGRES_ENABLE_DB_FUNCTIONS=y`: one call of a stored function
  per save, without the table lock) and in its default one (`LOCK TABLE ... IN EXCLUSIVE
  MODE` per save, which keeps notification ids in commit order and so serialises writers).

Two scenarios, each with WRITER_COUNT concurrent writers and a fixed number of events:
one event per transaction, every event on a new stream; and ten events per transaction,
ten events on one new stream. Both pools hold WRITER_COUNT connections, so no writer waits
for a connection. payrail's writers are asyncio tasks on asyncpg; the peer's are threads,
since its API is synchronous. Events are built before the clock starts in both cases;
encoding them is inside the measured time, as it is part of an append. Each system runs
REPEAT_COUNT_DEFAULT times per scenario, the systems taking turns, and the median rate
counts: the machine is shared, and one run of 4,000 events lasts about a second. Every run
writes into a fresh schema, and each store's row count is read back before a figure is
reported: a run that wrote fewer rows than it was given raises instead of reporting a rate.

The peer's driver matters to it as much as its configuration: psycopg's C implementation
(`psycopg[binary]`) appends about half again as fast as its pure-Python one here, so the
dev extras install it, and the report names the implementation that ran.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.postgres import PostgresApplicationRecorder

from schemas import encode, new_event
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentCreated, PaymentRequest
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.event_store import append_events
from services.common.service import RUNTIME_MIGRATIONS

EVENT_COUNT_DEFAULT = 4_000
EVENT_COUNT_MAX = 200_000
WRITER_COUNT = 16
BATCH_EVENT_COUNT = 10
REPEAT_COUNT_DEFAULT = 3
REPEAT_COUNT_MAX = 10
RUN_TIMEOUT_S_DEFAULT = 120.0
CONNECT_TIMEOUT_S = 10.0
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class IncompleteRun(Exception):
    """A store holds fewer events than the run appended: no rate is reported for it."""


@dataclass(frozen=True)
class Scenario:
    name: str
    events_per_transaction: int


SCENARIOS = (
    Scenario("one_event_per_transaction", 1),
    Scenario("ten_events_per_transaction", BATCH_EVENT_COUNT),
)

# The peer's two configurations: the environment each adds to the connection settings.
PEER_CONFIGURATIONS: dict[str, dict[str, str]] = {
    "peer_fastest": {"POSTGRES_ENABLE_DB_FUNCTIONS": "y"},
    "peer_default": {"POSTGRES_ENABLE_DB_FUNCTIONS": "n"},
}
SYSTEMS = ("payrail", *PEER_CONFIGURATIONS)


# -- the events ------------------------------------------------------------------------
def payment_created(stream_id: str, version: int, occurred_at: datetime) -> PaymentCreated:
    """A PaymentCreated as the gateway's requests make them (about 560 bytes of JSON)."""
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id=f"order-{uuid.uuid4().hex[:12]}",
            amount_minor=1999,
            currency="CNY",
            channel=Channel.ALIPAY,
            description="bench",
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            expires_at=occurred_at + timedelta(minutes=30),
        ),
        aggregate_id=stream_id,
        aggregate_version=version,
        merchant_id="mch_bench",
        producer="bench",
        occurred_at=occurred_at,
        correlation_id=f"corr_{stream_id}",
        causation_id=None,
    )


def payrail_streams(event_count: int, events_per_stream: int) -> list[list[PaymentCreated]]:
    """`event_count` events on new streams, `events_per_stream` on each."""
    occurred_at = datetime.now(UTC)
    streams: list[list[PaymentCreated]] = []
    for _ in range(event_count // events_per_stream):
        stream_id = f"pay_{uuid.uuid4().hex}"
        streams.append(
            [
                payment_created(stream_id, version, occurred_at)
                for version in range(1, events_per_stream + 1)
            ]
        )
    return streams


class PeerPayment(Aggregate):
    """The peer's aggregate: each event carries one payrail event body as JSON."""

    @event("Created")
    def __init__(self, body: dict[str, Any]) -> None:
        self.event_count = 1

    @event("Recorded")
    def record(self, body: dict[str, Any]) -> None:
        self.event_count += 1


class PeerPayments(Application[Any]):
    """The peer application; its events table is `peerpayments_events`."""


def peer_aggregates(streams: Sequence[Sequence[PaymentCreated]]) -> list[PeerPayment]:
    """One aggregate per payrail stream, its pending events carrying the same bodies."""
    aggregates: list[PeerPayment] = []
    for stream in streams:
        bodies = [json.loads(encode(created)) for created in stream]
        aggregate = PeerPayment(body=bodies[0])
        for body in bodies[1:]:
            aggregate.record(body=body)
        aggregates.append(aggregate)
    return aggregates


# -- the database ----------------------------------------------------------------------
@dataclass(frozen=True)
class ServerAddress:
    """Where the PostgreSQL server is, as both drivers need it."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def from_url(cls, database_url: str) -> ServerAddress:
        parts = urlsplit(database_url)
        query = parse_qs(parts.query)
        # A Unix socket directory comes as `?host=/path` (the embedded server's form).
        host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        user = unquote(parts.username or "postgres")
        return cls(
            host=host,
            port=port,
            user=user,
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/") or user,
        )

    def shown(self) -> str:
        """The address without the password, for reports."""
        return f"{self.host}:{self.port}"


def with_database(database_url: str, database: str) -> str:
    return urlunsplit(urlsplit(database_url)._replace(path=f"/{database}"))


async def _execute(database_url: str, statement: str) -> None:
    connection = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _fetch_count(database_url: str, table: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        count: int = await connection.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await connection.close()
    return count


async def _mean_event_bytes(database_url: str, table: str, column_expression: str) -> float:
    connection = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        mean: float = await connection.fetchval(
            f"SELECT avg(octet_length({column_expression}))::float8 FROM {table}"
        )
    finally:
        await connection.close()
    return mean


# -- the runs --------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    events_appended: int
    elapsed_s: float
    events_in_store: int
    event_bytes_mean: float


async def run_payrail(
    scratch_url: str,
    schema: str,
    streams: Sequence[Sequence[PaymentCreated]],
    writer_count: int,
    timeout_s: float,
) -> RunResult:
    """Append every stream with `append_events`, one transaction per stream, from
    `writer_count` tasks. Raises TimeoutError after `timeout_s`."""
    await apply_migrations(scratch_url, schema, load_migrations(RUNTIME_MIGRATIONS))
    pool = await create_pool(scratch_url, schema, size_max=writer_count)
    try:
        # Open every connection before the clock starts, as the peer's pool does.
        connections = [await pool.acquire(timeout=CONNECT_TIMEOUT_S) for _ in range(writer_count)]
        for connection in connections:
            await pool.release(connection)

        async def writer(share: Sequence[Sequence[PaymentCreated]]) -> None:
            for stream in share:
                async with pool.acquire() as connection, connection.transaction():
                    await append_events(connection, stream[0].aggregate_id, 0, stream)

        begin = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(writer(streams[w::writer_count]) for w in range(writer_count)))
        elapsed_s = time.perf_counter() - begin
    finally:
        await pool.close()
    table = f"{schema}.event_store"
    return RunResult(
        events_appended=sum(len(stream) for stream in streams),
        elapsed_s=elapsed_s,
        events_in_store=await _fetch_count(scratch_url, table),
        event_bytes_mean=await _mean_event_bytes(scratch_url, table, "body::text"),
    )


def peer_environment(address: ServerAddress, schema: str, writer_count: int) -> dict[str, str]:
    """The peer's settings (its documented environment variables) for `schema`."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": address.database,
        "POSTGRES_HOST": address.host,
        "POSTGRES_PORT": str(address.port),
        "POSTGRES_USER": address.user,
        "POSTGRES_PASSWORD": address.password,
        "POSTGRES_SCHEMA": schema,
        # One connection per writer, as payrail's pool has; none opened on demand.
        "POSTGRES_POOL_SIZE": str(writer_count),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": str(int(CONNECT_TIMEOUT_S)),
    }


def _run_threads(
    aggregates: Sequence[PeerPayment],
    save: Callable[[PeerPayment], object],
    writer_count: int,
    timeout_s: float,
) -> float:
    """Save every aggregate from `writer_count` threads; the elapsed seconds.

    Raises TimeoutError when the saves take longer than `timeout_s`; the writers stop at
    their next aggregate.
    """
    deadline = time.monotonic() + timeout_s
    timed_out = threading.Event()

    def writer(share: Sequence[PeerPayment]) -> None:
        for aggregate in share:
            if time.monotonic() > deadline:
                timed_out.set()
                return
            save(aggregate)

    with concurrent.futures.ThreadPoolExecutor(max_workers=writer_count) as executor:
        begin = time.perf_counter()
        futures = [
            executor.submit(writer, aggregates[w::writer_count]) for w in range(writer_count)
        ]
        for future in futures:
            future.result()
        elapsed_s = time.perf_counter() - begin
    if timed_out.is_set():
        raise TimeoutError(f"the peer's saves took longer than {timeout_s} s")
    return elapsed_s


def run_peer(
    address: ServerAddress,
    schema: str,
    configuration: dict[str, str],
    aggregates: Sequence[PeerPayment],
    writer_count: int,
    timeout_s: float,
) -> tuple[float, str]:
    """Save every aggregate (one transaction each) with the peer; (elapsed seconds, the
    qualified name of its events table). Raises TimeoutError after `timeout_s`."""
    application = PeerPayments(
        env={**peer_environment(address, schema, writer_count), **configuration}
    )
    try:
        recorder = cast(PostgresApplicationRecorder, application.recorder)
        # Open the pool's connections before the clock starts, as payrail's are.
        recorder.max_notification_id()
        recorder.datastore.pool.wait(timeout=CONNECT_TIMEOUT_S)
        elapsed_s = _run_threads(aggregates, application.save, writer_count, timeout_s)
    finally:
        application.close()
    return elapsed_s, f"{recorder.datastore.schema}.{recorder.events_table_name}"


async def run_peer_measured(
    address: ServerAddress,
    scratch_url: str,
    schema: str,
    configuration: dict[str, str],
    streams: Sequence[Sequence[PaymentCreated]],
    writer_count: int,
    timeout_s: float,
) -> RunResult:
    await _execute(scratch_url, f"CREATE SCHEMA {schema}")
    aggregates = peer_aggregates(streams)
    elapsed_s, table = await asyncio.to_thread(
        run_peer, address, schema, configuration, aggregates, writer_count, timeout_s
    )
    return RunResult(
        events_appended=sum(len(stream) for stream in streams),
        elapsed_s=elapsed_s,
        events_in_store=await _fetch_count(scratch_url, table),
        # The peer stores the event's JSON (its body and its own envelope) as bytes.
        event_bytes_mean=await _mean_event_bytes(scratch_url, table, "state"),
    )


async def _run_scenario(
    address: ServerAddress,
    scratch_url: str,
    database: str,
    scenario: Scenario,
    event_count: int,
    writer_count: int,
    timeout_s: float,
    repeat_count: int,
) -> dict[str, list[RunResult]]:
    """Every system's runs of `scenario`, each into a fresh schema and checked complete.
    The systems take turns, so a slow moment of the shared machine does not fall on one
    system's runs alone."""
    scratch_address = dataclasses.replace(address, database=database)
    runs: dict[str, list[RunResult]] = {system: [] for system in SYSTEMS}
    for repeat in range(repeat_count):
        streams = payrail_streams(event_count, scenario.events_per_transaction)
        for system in SYSTEMS:
            schema = f"{system}_{scenario.name}_{repeat}"
            if system == "payrail":
                run = await run_payrail(scratch_url, schema, streams, writer_count, timeout_s)
            else:
                run = await run_peer_measured(
                    scratch_address,
                    scratch_url,
                    schema,
                    PEER_CONFIGURATIONS[system],
                    streams,
                    writer_count,
                    timeout_s,
                )
            _check(system, scenario, run)
            runs[system].append(run)
    return runs


def _check(system: str, scenario: Scenario, run: RunResult) -> None:
    if run.events_in_store != run.events_appended:
        raise IncompleteRun(
            f"{system} holds {run.events_in_store} of {run.events_appended} events"
            f" after {scenario.name}"
        )


def summarise_scenario(scenario: Scenario, runs: dict[str, list[RunResult]]) -> dict[str, Any]:
    """Each system's median rate over its runs, and payrail's over each peer's."""
    rates = {
        system: [run.events_appended / run.elapsed_s for run in system_runs]
        for system, system_runs in runs.items()
    }
    medians = {system: statistics.median(system_rates) for system, system_rates in rates.items()}
    return {
        "events_per_transaction": scenario.events_per_transaction,
        **{f"{system}_events_per_s": round(rate, 1) for system, rate in medians.items()},
        **{
            f"payrail_over_{system}_ratio": round(medians["payrail"] / medians[system], 3)
            for system in PEER_CONFIGURATIONS
        },
        "events_per_s_runs": {
            system: [round(rate, 1) for rate in system_rates]
            for system, system_rates in rates.items()
        },
        "events_written_runs": {
            system: [run.events_in_store for run in system_runs]
            for system, system_runs in runs.items()
        },
        "event_bytes_mean": {
            system: round(statistics.mean(run.event_bytes_mean for run in system_runs), 1)
            for system, system_runs in runs.items()
        },
    }


async def measure_event_store_peer(
    database_url: str,
    event_count: int = EVENT_COUNT_DEFAULT,
    *,
    writer_count: int = WRITER_COUNT,
    repeat_count: int = REPEAT_COUNT_DEFAULT,
    timeout_s: float = RUN_TIMEOUT_S_DEFAULT,
) -> dict[str, Any]:
    """Append `event_count` events per scenario with payrail and with the peer (see the
    module docstring) in a scratch database on `database_url`'s server, dropped at the end.
    Each system runs `repeat_count` times per scenario, the systems taking turns, and its
    median rate is reported.

    Raises ValueError for a count that is not a positive multiple of BATCH_EVENT_COUNT,
    TimeoutError when one run takes longer than `timeout_s`, and IncompleteRun when a
    store holds fewer events than were appended to it.
    """
    if not (0 < event_count <= EVENT_COUNT_MAX and event_count % BATCH_EVENT_COUNT == 0):
        raise ValueError(
            f"event_count must be a multiple of {BATCH_EVENT_COUNT} up to {EVENT_COUNT_MAX}"
        )
    if not 1 <= repeat_count <= REPEAT_COUNT_MAX:
        raise ValueError(f"repeat_count must be between 1 and {REPEAT_COUNT_MAX}")
    address = ServerAddress.from_url(database_url)
    database = f"payrail_bench_peer_{uuid.uuid4().hex[:10]}"
    scratch_url = with_database(database_url, database)
    await _execute(database_url, f'CREATE DATABASE "{database}"')
    scenarios: dict[str, Any] = {}
    try:
        for scenario in SCENARIOS:
            runs = await _run_scenario(
                address,
                scratch_url,
                database,
                scenario,
                event_count,
                writer_count,
                timeout_s,
                repeat_count,
            )
            scenarios[scenario.name] = summarise_scenario(scenario, runs)
    finally:
        await _execute(database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "server": address.shown(),
        "scratch_database": database,
        "events_per_scenario": event_count,
        "writers": writer_count,
        "repeat_count": repeat_count,
        "peer": {
            "library": f"eventsourcing {package_version('eventsourcing')}",
            "driver": f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} implementation)",
            "configurations": PEER_CONFIGURATIONS,
        },
        "scenarios": scenarios,
    }


def table_rows(result: dict[str, Any]) -> list[tuple[str, object]]:
    """The lines `make bench` prints for this comparison."""
    rows: list[tuple[str, object]] = []
    for name, scenario in result["scenarios"].items():
        label = name.replace("_", " ")
        rows += [
            (f"event store appends/s, payrail ({label})", scenario["payrail_events_per_s"]),
            (
                f"  peer eventsourcing, fastest (db functions) ({label})",
                scenario["peer_fastest_events_per_s"],
            ),
            (f"  peer eventsourcing, default ({label})", scenario["peer_default_events_per_s"]),
            (
                "  payrail / peer (fastest, default)",
                f"{scenario['payrail_over_peer_fastest_ratio']},"
                f" {scenario['payrail_over_peer_default_ratio']}",
            ),
        ]
    rows.append(
        (
            "event store comparison work",
            f"{result['events_per_scenario']} events per scenario, {result['writers']} writers,"
            f" {result['peer']['driver']}",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--events",
        type=int,
        default=EVENT_COUNT_DEFAULT,
        help=f"events per scenario, a multiple of {BATCH_EVENT_COUNT} up to {EVENT_COUNT_MAX}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=REPEAT_COUNT_DEFAULT,
        help=f"runs of each system per scenario, 1 to {REPEAT_COUNT_MAX} (the median counts)",
    )
    parser.add_argument("--timeout-s", type=float, default=RUN_TIMEOUT_S_DEFAULT)
    arguments = parser.parse_args()
    if not 1 <= arguments.repeat <= REPEAT_COUNT_MAX:
        parser.error(f"--repeat must be between 1 and {REPEAT_COUNT_MAX}")
    if not (0 < arguments.events <= EVENT_COUNT_MAX and arguments.events % BATCH_EVENT_COUNT == 0):
        parser.error(f"--events must be a multiple of {BATCH_EVENT_COUNT} up to {EVENT_COUNT_MAX}")
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    result = asyncio.run(
        measure_event_store_peer(
            database_url,
            arguments.events,
            repeat_count=arguments.repeat,
            timeout_s=arguments.timeout_s,
        )
    )
    rows = table_rows(result)
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
