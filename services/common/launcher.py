"""Starts the whole platform on one machine: broker, database, every service as its own
OS process, and a demo merchant. `make run` and the end-to-end tests use this one path.

Before anything starts, the launcher checks that the ports its processes will listen on
are free and names the process holding any that is not (`ports_in_use`). While it runs,
`Platform.supervise_once` restarts a process that exited without being asked to, as
compose or Kubernetes would: with the same command and environment, after a capped
exponential backoff that starts over once the process has stayed up for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psutil
import structlog
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.broker import ensure_topics
from services.common.db import apply_migrations, load_migrations
from services.common.ids import new_secret
from services.common.infrastructure import (
    EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    free_port,
    port_is_open,
    start_embedded_broker,
    start_embedded_postgres,
    stop_embedded_postgres,
    stop_process,
)
from services.common.service import RUNTIME_MIGRATIONS
from services.common.settings import ServiceSettings
from services.common.supervision import Backoff

log = structlog.get_logger(__name__)

# (service, its migration packages). The schema of each service is its name.
SERVICE_MIGRATIONS: dict[str, tuple[str, ...]] = {
    "gateway": ("services.gateway.migrations",),
    "payment_center": ("services.payment_center.migrations",),
    "ledger": ("services.ledger.migrations",),
    "risk": ("services.risk.migrations",),
    "notifier": ("services.notifier.migrations",),
}

DEMO_MERCHANT_ID = "mch_demo"


class LauncherSettings(BaseSettings):
    """Ports and places of a local platform. Every field is an environment variable."""

    model_config = SettingsConfigDict(env_prefix="PAYRAIL_", extra="ignore", populate_by_name=True)

    state_dir: Path = Field(default=Path(".payrail"), description="Logs and embedded data.")
    gateway_port: int = Field(default=8000, description="Public API port.")
    payment_center_port: int = Field(default=8001, description="payment_center health port.")
    ledger_port: int = Field(default=8002, description="ledger health and internal API port.")
    risk_port: int = Field(default=8003, description="risk health port.")
    notifier_port: int = Field(default=8004, description="notifier internal API port.")
    connector_port: int = Field(
        default=8005, description="Channel connector port (the channels' and bank's callbacks)."
    )
    psp_port: int = Field(default=8100, description="PSP simulator port.")
    demo_receiver_port: int = Field(default=8200, description="Demo merchant webhook receiver.")
    embedded_broker_port: int = Field(
        default=9092, description="Port of the embedded broker (a free one if taken)."
    )
    admin_key: SecretStr | None = Field(
        default=None, description="Admin API key; generated and saved in the state dir if unset."
    )
    startup_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Longest wait for each process to be ready."
    )
    restart_backoff_initial_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "Wait before restarting a process that exited unexpectedly; it doubles with "
            "each further exit in a row."
        ),
    )
    restart_backoff_s_max: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest wait before restarting a process that keeps exiting.",
    )
    restart_healthy_after_s: float = Field(
        default=60.0,
        gt=0,
        le=3_600,
        description=(
            "A process that stayed up this long before exiting counts as recovered: its "
            "backoff starts again from the initial wait."
        ),
    )

    @classmethod
    def on_free_ports(cls, state_dir: Path) -> LauncherSettings:
        """Settings for a private platform (tests, benchmarks) beside any other one."""
        return cls(
            state_dir=state_dir,
            gateway_port=free_port(),
            payment_center_port=free_port(),
            ledger_port=free_port(),
            risk_port=free_port(),
            notifier_port=free_port(),
            connector_port=free_port(),
            psp_port=free_port(),
            demo_receiver_port=free_port(),
            embedded_broker_port=free_port(),
        )


def required_ports(settings: LauncherSettings) -> dict[str, int]:
    """The ports the platform's processes will listen on, by the name of their setting
    (`PAYRAIL_<NAME>_PORT`). The embedded broker's is not among them: it moves to a free
    port when its own is taken."""
    return {
        "gateway": settings.gateway_port,
        "payment_center": settings.payment_center_port,
        "ledger": settings.ledger_port,
        "risk": settings.risk_port,
        "notifier": settings.notifier_port,
        "connector": settings.connector_port,
        "psp": settings.psp_port,
        "demo_receiver": settings.demo_receiver_port,
    }


# A command line can be long (a virtualenv path and arguments); the start of it is enough
# to recognise the process.
_COMMAND_LINE_CHARACTERS_MAX = 200


@dataclass(frozen=True)
class PortInUse:
    """A port the platform needs that another process already listens on."""

    port: int
    needed_by: str
    holder_pid: int | None
    holder: str | None
    """The holder's name and command line, when the system tells them."""

    def describe(self) -> str:
        if self.holder_pid is None:
            who = "another process (one the system does not name to this user)"
        elif self.holder is None:
            who = f"process {self.holder_pid}"
        else:
            who = f"process {self.holder_pid} ({self.holder})"
        return (
            f"port {self.port} ({self.needed_by}, PAYRAIL_{self.needed_by.upper()}_PORT) "
            f"is in use by {who}"
        )


class PortsInUseError(RuntimeError):
    """Raised before anything starts when a port the platform needs is taken."""

    def __init__(self, ports: list[PortInUse]) -> None:
        self.ports = ports
        lines = ["payrail cannot start: a port it needs is in use."]
        lines += [f"  {port.describe()}" for port in ports]
        lines.append(
            "Is another `make run` going? Stop it first, or give this one other ports "
            "with the PAYRAIL_..._PORT variables above."
        )
        super().__init__("\n".join(lines))


def ports_in_use(settings: LauncherSettings, host: str = "127.0.0.1") -> list[PortInUse]:
    """The ports of `required_ports` that cannot be bound on `host`, with their holders.

    Raises OSError when binding fails for another reason than the port being in use (a
    privileged port, an address this machine does not have).
    """
    taken = [
        (needed_by, port)
        for needed_by, port in required_ports(settings).items()
        if not _can_listen(host, port)
    ]
    if not taken:
        return []
    holders = _listening_processes({port for _, port in taken})
    return [
        PortInUse(port, needed_by, *holders.get(port, (None, None))) for needed_by, port in taken
    ]


def check_ports_free(settings: LauncherSettings) -> None:
    """Raises PortsInUseError naming every port the platform needs that is taken."""
    taken = ports_in_use(settings)
    if taken:
        raise PortsInUseError(taken)


def _can_listen(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # uvicorn sets SO_REUSEADDR as well, so a port whose connections from a previous run
        # linger in TIME_WAIT is free here as it is for the service; only a listener counts.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listening_processes(ports: set[int]) -> dict[int, tuple[int | None, str | None]]:
    """(pid, description) of the process listening on each of `ports`, where known."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        # Some systems (macOS) list sockets of other processes to root only.
        return {}
    holders: dict[int, tuple[int | None, str | None]] = {}
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or not connection.laddr:
            continue
        port = connection.laddr.port
        if port in ports and holders.get(port, (None, None))[0] is None:
            holders[port] = (connection.pid, _describe_process(connection.pid))
    return holders


def _describe_process(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        name: str = process.name()
        # Arguments may hold newlines (`python -c`); one line reads better in a message.
        command_line = " ".join(" ".join(process.cmdline()).split())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if len(command_line) > _COMMAND_LINE_CHARACTERS_MAX:
        command_line = command_line[: _COMMAND_LINE_CHARACTERS_MAX - 3] + "..."
    return f"{name}: {command_line}" if command_line else name


def _describe_exit(code: int) -> str:
    """`exited with code N`, naming the signal when a signal ended the process."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"exited with code {code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"exited with code {code}"


@dataclass
class _RestartRecord:
    failure_count: int = 0
    """Exits in the current series; a process that stayed up long enough starts a new one."""
    restart_count: int = 0


@dataclass
class PlatformInfo:
    api_base_url: str
    psp_base_url: str
    admin_key: str
    kafka_bootstrap_servers: str
    database_url: str
    # Where the channels and the bank call back (the connector).
    connector_base_url: str = ""
    demo_api_key: str | None = None
    demo_webhook_log: Path | None = None
    log_dir: Path | None = None


@dataclass
class Platform:
    """A running platform. Use as a context manager; `stop()` ends every process."""

    settings: LauncherSettings
    service_settings: ServiceSettings
    info: PlatformInfo | None = None
    monotonic: Callable[[], float] = time.monotonic
    """The clock of restart planning (uptimes, backoff); tests pass one they move."""
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _commands: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _log_files: list[IO[bytes]] = field(default_factory=list)
    _broker: subprocess.Popen[bytes] | None = None
    _postgres: object | None = None
    _service_logs: dict[str, IO[bytes]] = field(default_factory=dict)
    _ready_urls: dict[str, str] = field(default_factory=dict)
    _started_s: dict[str, float] = field(default_factory=dict)
    _restarts: dict[str, _RestartRecord] = field(default_factory=dict)
    _restart_due_s: dict[str, float] = field(default_factory=dict)
    _console: queue.Queue[str] = field(default_factory=queue.Queue)
    _readiness_watchers: list[threading.Thread] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- infrastructure -------------------------------------------------------------
    def _start_broker(self) -> str:
        """Bootstrap servers: KAFKA_BOOTSTRAP_SERVERS if set, else an embedded broker."""
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        port = self.settings.embedded_broker_port
        if port_is_open("127.0.0.1", port):
            port = free_port()
        self._broker = start_embedded_broker(port, log_file=self._log("broker"))
        return f"127.0.0.1:{port}"

    def _start_database(self) -> str:
        if os.environ.get("DATABASE_URL"):
            return os.environ["DATABASE_URL"]
        dsn, self._postgres = start_embedded_postgres(
            (self.settings.state_dir / "pgdata").resolve()
        )
        return dsn

    def _log(self, name: str) -> IO[bytes]:
        log_dir = self.settings.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        handle = (log_dir / f"{name}.log").open("ab")
        self._log_files.append(handle)
        return handle

    def _admin_key(self) -> str:
        if self.settings.admin_key is not None:
            return self.settings.admin_key.get_secret_value()
        path = self.settings.state_dir / "admin_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_secret("ak_"))
            path.chmod(0o600)
        return path.read_text().strip()

    # -- services ------------------------------------------------------------------
    def _spawn(self, name: str, module: str, env: dict[str, str]) -> None:
        # A restarted process appends to the log its predecessor wrote, through the same
        # handle, so restarts neither split the log nor open a file each.
        log_file = self._service_logs.get(name)
        if log_file is None:
            log_file = self._service_logs[name] = self._log(name)
        # The whole environment is kept, not only the platform's own variables: a restart
        # must run the process as it first ran even if this process's environment changed
        # since (tests set variables only while the platform starts).
        full_env = {**os.environ, **env}
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        self._processes.append((name, process))
        self._commands[name] = (module, full_env)
        self._started_s[name] = self.monotonic()

    def pid_of(self, name: str) -> int:
        """The process id of service `name`. Raises KeyError when it is not running (it
        may be waiting to be restarted)."""
        return dict(self._processes)[name].pid

    def restart(self, name: str, *, ready_url: str) -> None:
        """Kill service `name` without warning (SIGKILL: no graceful shutdown, as in a
        crash) and start it again with the same settings; return once `ready_url` answers.
        For fault tests."""
        process = dict(self._processes)[name]
        process.kill()
        process.wait(timeout=10)
        self._processes.remove((name, process))
        module, env = self._commands[name]
        self._spawn(name, module, env)
        self._wait_healthy(name, ready_url)

    def start_another_instance(self, name: str, port: int) -> str:
        """Start one more process of service `name` beside the running one, on HTTP
        `port`, as a second replica would run (same database, broker and consumer group).
        Returns the new instance's name (`name#2`, ...) once it is ready."""
        module, env = self._commands[name]
        count = sum(1 for existing, _ in self._processes if existing.partition("#")[0] == name)
        instance = f"{name}#{count + 1}"
        self._spawn(instance, module, {**env, "PAYRAIL_HTTP_PORT": str(port)})
        self._wait_healthy(instance, f"http://127.0.0.1:{port}/readyz")
        return instance

    def kill(self, name: str) -> None:
        """SIGKILL service process `name` (a crash: no graceful shutdown) and forget it,
        so that supervision does not restart it. For fault tests."""
        process = dict(self._processes)[name]
        process.kill()
        process.wait(timeout=10)
        self._processes.remove((name, process))

    def _wait_healthy(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        process = dict(self._processes).get(name)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see its log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not ready at {url} after {self.settings.startup_timeout_s}s")

    def start(self) -> PlatformInfo:
        """Start everything and the demo merchant. Raises when any part fails to start."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> PlatformInfo:
        s = self.settings
        check_ports_free(s)
        bootstrap = self._start_broker()
        database_url = self._start_database()
        # The operator commands (`payrail dead-letters`, `payrail ledger rebuild`) find the
        # running platform here when DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are unset.
        write_running_addresses(self.settings.state_dir, database_url, bootstrap)
        overrides: dict[str, object] = {
            "kafka_bootstrap_servers": bootstrap,
            "database_url": database_url,
        }
        if self._broker is not None and "PAYRAIL_KAFKA_FETCH_MAX_WAIT_MS" not in os.environ:
            overrides["kafka_fetch_max_wait_ms"] = EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
        shared = ServiceSettings(**{**self.service_settings.model_dump(), **overrides})
        asyncio.run(prepare_infrastructure(shared))
        admin_key = self._admin_key()
        common_env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": database_url,
            "PAYRAIL_KAFKA_TOPIC_PREFIX": shared.kafka_topic_prefix,
            "PAYRAIL_KAFKA_ENABLE_IDEMPOTENCE": str(shared.kafka_enable_idempotence).lower(),
            "PAYRAIL_KAFKA_FETCH_MAX_WAIT_MS": str(shared.kafka_fetch_max_wait_ms),
            "PAYRAIL_LOG_FORMAT": "json",
        }
        psp_url = f"http://127.0.0.1:{s.psp_port}"
        api_url = f"http://127.0.0.1:{s.gateway_port}"
        notifier_url = f"http://127.0.0.1:{s.notifier_port}"
        webhook_log = s.state_dir / "logs" / "demo_webhooks.jsonl"
        secret_file = s.state_dir / "demo_webhook_secret"
        self._spawn(
            "psp_simulator",
            "services.psp_simulator",
            {**common_env, "PAYRAIL_PSP_PORT": str(s.psp_port)},
        )
        for name, port in (
            ("payment_center", s.payment_center_port),
            ("ledger", s.ledger_port),
            ("risk", s.risk_port),
            ("notifier", s.notifier_port),
        ):
            self._spawn(
                name,
                f"services.{name}",
                {
                    **common_env,
                    "PAYRAIL_HTTP_PORT": str(port),
                    # The local platform's receivers (the demo's, the tests') are on this
                    # machine; a deployment leaves the allow-list empty.
                    "PAYRAIL_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1", "localhost"]',
                },
            )
        self._spawn(
            "gateway",
            "services.gateway",
            {
                **common_env,
                "PAYRAIL_HTTP_PORT": str(s.gateway_port),
                "PAYRAIL_ADMIN_KEY": admin_key,
                "PAYRAIL_NOTIFIER_URL": notifier_url,
                "PAYRAIL_LEDGER_URL": f"http://127.0.0.1:{s.ledger_port}",
                "PAYRAIL_RISK_URL": f"http://127.0.0.1:{s.risk_port}",
            },
        )
        self._spawn(
            "connector",
            "services.gateway.connector",
            {
                **common_env,
                "PAYRAIL_HTTP_PORT": str(s.connector_port),
                "PAYRAIL_PSP_BASE_URL": psp_url,
            },
        )
        self._spawn(
            "demo_receiver",
            "services.notifier.demo_receiver",
            {
                "PAYRAIL_DEMO_RECEIVER_PORT": str(s.demo_receiver_port),
                "PAYRAIL_DEMO_RECEIVER_SECRET_FILE": str(secret_file.resolve()),
                "PAYRAIL_DEMO_RECEIVER_LOG_FILE": str(webhook_log.resolve()),
            },
        )
        # In the order they are waited for: the simulator first, the demo receiver last.
        self._ready_urls = {
            "psp_simulator": f"{psp_url}/healthz",
            "payment_center": f"http://127.0.0.1:{s.payment_center_port}/readyz",
            "ledger": f"http://127.0.0.1:{s.ledger_port}/readyz",
            "risk": f"http://127.0.0.1:{s.risk_port}/readyz",
            "notifier": f"{notifier_url}/readyz",
            "gateway": f"{api_url}/readyz",
            "connector": f"http://127.0.0.1:{s.connector_port}/readyz",
            "demo_receiver": f"http://127.0.0.1:{s.demo_receiver_port}/healthz",
        }
        for name, url in self._ready_urls.items():
            self._wait_healthy(name, url)
        self.info = PlatformInfo(
            api_base_url=api_url,
            psp_base_url=psp_url,
            connector_base_url=f"http://127.0.0.1:{s.connector_port}",
            admin_key=admin_key,
            kafka_bootstrap_servers=bootstrap,
            database_url=database_url,
            demo_webhook_log=webhook_log,
            log_dir=s.state_dir / "logs",
        )
        self.info.demo_api_key = set_up_demo_merchant(
            api_url,
            admin_key,
            f"http://127.0.0.1:{s.demo_receiver_port}/webhooks",
            secret_file,
        )
        return self.info

    # -- supervision ---------------------------------------------------------------
    def supervise_once(self) -> list[str]:
        """One round of supervision; call it about twice a second while the platform runs.

        A process that exited (whatever its code: nothing here asks a process to stop) is
        restarted with the same command and environment once its backoff has passed.
        Whether a restarted process becomes ready is checked in a background thread, so a
        round never waits. Returns lines for the console: each exit with its planned
        restart, and each restarted process that became ready or did not in time.
        Raises OSError when a process cannot be spawned at all.
        """
        lines = self._console_lines()
        now_s = self.monotonic()
        for name, process in list(self._processes):
            code = process.poll()
            if code is not None:
                self._processes.remove((name, process))
                lines.append(self._plan_restart(name, code, now_s))
        for name, due_s in list(self._restart_due_s.items()):
            if due_s <= now_s:
                del self._restart_due_s[name]
                module, env = self._commands[name]
                self._spawn(name, module, env)
                self._watch_readiness(name)
        return lines

    def _restart_backoff(self) -> Backoff:
        # No jitter: the processes share one machine and nothing to stampede, and the
        # console then announces the waits a reader can predict.
        return Backoff(
            initial_s=self.settings.restart_backoff_initial_s,
            s_max=self.settings.restart_backoff_s_max,
            jitter_ratio=0.0,
        )

    def _plan_restart(self, name: str, code: int, now_s: float) -> str:
        record = self._restarts.setdefault(name, _RestartRecord())
        if now_s - self._started_s[name] >= self.settings.restart_healthy_after_s:
            record.failure_count = 0
        record.failure_count += 1
        record.restart_count += 1
        delay_s = self._restart_backoff().delay_s(record.failure_count, jitter_fraction=0.0)
        self._restart_due_s[name] = now_s + delay_s
        log_path = self.settings.state_dir / "logs" / f"{name}.log"
        return (
            f"{name} {_describe_exit(code)}; restarting in {delay_s:.1f} s "
            f"(restart #{record.restart_count}); its log: {log_path}"
        )

    def _watch_readiness(self, name: str) -> None:
        url = self._ready_urls.get(name)
        if url is None:
            return
        process = dict(self._processes)[name]
        restart_number = self._restarts[name].restart_count
        self._readiness_watchers = [t for t in self._readiness_watchers if t.is_alive()]
        watcher = threading.Thread(
            target=self._await_ready,
            args=(name, process, url, restart_number),
            name=f"readiness-{name}",
            daemon=True,
        )
        self._readiness_watchers.append(watcher)
        watcher.start()

    def _await_ready(
        self, name: str, process: subprocess.Popen[bytes], url: str, restart_number: int
    ) -> None:
        timeout_s = self.settings.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return  # supervise_once reports the exit and plans the next restart
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    self._console.put(f"{name} is ready again (restart #{restart_number})")
                    return
            if self._stopping.wait(0.2):
                return
        self._console.put(
            f"{name} is not ready {timeout_s:g} s after restart #{restart_number}; "
            f"see {self.settings.state_dir / 'logs' / f'{name}.log'}"
        )

    def _console_lines(self) -> list[str]:
        lines: list[str] = []
        with contextlib.suppress(queue.Empty):
            while True:
                lines.append(self._console.get_nowait())
        return lines

    def stop(self) -> None:
        self._stopping.set()
        self._restart_due_s.clear()
        for watcher in self._readiness_watchers:
            # A watcher waits at most one HTTP timeout (1 s) plus its poll period.
            watcher.join(timeout=5)
        self._readiness_watchers.clear()
        for _, process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self._processes):
            stop_process(process, timeout_s=15)
        self._processes.clear()
        if self._broker is not None:
            stop_process(self._broker)
            self._broker = None
        if self._postgres is not None:
            stop_embedded_postgres(self._postgres)
            self._postgres = None
        for handle in self._log_files:
            handle.close()
        self._log_files.clear()
        self._service_logs.clear()


RUNNING_ADDRESSES_FILE = "running.json"


def write_running_addresses(state_dir: Path, database_url: str, bootstrap: str) -> None:
    path = state_dir / RUNNING_ADDRESSES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"database_url": database_url, "kafka_bootstrap_servers": bootstrap})
    )
    path.chmod(0o600)


def operator_settings(state_dir: Path = Path(".payrail")) -> ServiceSettings:
    """Settings for an operator command: the environment's, else those of the platform
    `make run` started from this directory, else the defaults."""
    overrides: dict[str, object] = {}
    path = state_dir / RUNNING_ADDRESSES_FILE
    if path.exists():
        running = json.loads(path.read_text())
        if not os.environ.get("DATABASE_URL") and not os.environ.get("PAYRAIL_DATABASE_URL"):
            overrides["database_url"] = running["database_url"]
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            overrides["kafka_bootstrap_servers"] = running["kafka_bootstrap_servers"]
    return ServiceSettings(**overrides)  # type: ignore[arg-type]


async def prepare_infrastructure(settings: ServiceSettings) -> None:
    """Create the topics and apply every service's migrations."""
    await ensure_topics(settings)
    for service, packages in SERVICE_MIGRATIONS.items():
        await apply_migrations(
            settings.database_url, service, load_migrations(RUNTIME_MIGRATIONS, *packages)
        )


def set_up_demo_merchant(api_url: str, admin_key: str, webhook_url: str, secret_file: Path) -> str:
    """Onboard the demo merchant (or reuse it) and return a fresh API key for it."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        created = client.post(
            "/v1/admin/merchants",
            headers=admin,
            json={
                "merchant_id": DEMO_MERCHANT_ID,
                "name": "Demo Shop",
                "channels": ["alipay", "wechat_pay", "card"],
                "fee_plans": {
                    "alipay": {"basis_points": 60, "fixed_minor": 0},
                    "wechat_pay": {"basis_points": 60, "fixed_minor": 0},
                    "card": {
                        "basis_points": 290,
                        "fixed_minor_by_currency": {"CNY": 30, "USD": 30, "EUR": 30},
                    },
                },
                "single_payment_limit_minor": 1_000_000,
            },
        )
        if created.status_code == 201:
            api_key: str = created.json()["api_key"]["secret"]
        elif created.status_code == 409:
            issued = client.post(f"/v1/admin/merchants/{DEMO_MERCHANT_ID}/api_keys", headers=admin)
            issued.raise_for_status()
            api_key = issued.json()["secret"]
        else:
            created.raise_for_status()
            raise RuntimeError(f"unexpected answer {created.status_code}")
        merchant = {"Authorization": f"Bearer {api_key}"}
        endpoints = client.get("/v1/webhook_endpoints", headers=merchant)
        endpoints.raise_for_status()
        has_endpoint = any(item["url"] == webhook_url for item in _items(endpoints.json()))
        if not has_endpoint or not secret_file.exists():
            endpoint = client.post(
                "/v1/webhook_endpoints",
                headers=merchant,
                json={"url": webhook_url, "events": ["*"]},
            )
            endpoint.raise_for_status()
            secret_file.write_text(endpoint.json()["secret"])
            secret_file.chmod(0o600)
    return api_key


def _items(listing: object) -> list[dict[str, object]]:
    if isinstance(listing, dict):
        data = listing.get("data", [])
        return data if isinstance(data, list) else []
    return listing if isinstance(listing, list) else []
