"""Starts the whole platform on one machine: broker, database, every service as its own
OS process, and a demo merchant. `make run` and the end-to-end tests use this one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
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
            psp_port=free_port(),
            demo_receiver_port=free_port(),
            embedded_broker_port=free_port(),
        )


@dataclass
class PlatformInfo:
    api_base_url: str
    psp_base_url: str
    admin_key: str
    kafka_bootstrap_servers: str
    database_url: str
    demo_api_key: str | None = None
    demo_webhook_log: Path | None = None
    log_dir: Path | None = None


@dataclass
class Platform:
    """A running platform. Use as a context manager; `stop()` ends every process."""

    settings: LauncherSettings
    service_settings: ServiceSettings
    info: PlatformInfo | None = None
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _commands: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _log_files: list[IO[bytes]] = field(default_factory=list)
    _broker: subprocess.Popen[bytes] | None = None
    _postgres: object | None = None

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
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=self._log(name),
            stderr=subprocess.STDOUT,
        )
        self._processes.append((name, process))
        self._commands[name] = (module, env)

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
        bootstrap = self._start_broker()
        database_url = self._start_database()
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
                "PAYRAIL_PSP_BASE_URL": psp_url,
                "PAYRAIL_NOTIFIER_URL": notifier_url,
                "PAYRAIL_LEDGER_URL": f"http://127.0.0.1:{s.ledger_port}",
                "PAYRAIL_RISK_URL": f"http://127.0.0.1:{s.risk_port}",
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
        self._wait_healthy("psp_simulator", f"{psp_url}/healthz")
        for name, port in (
            ("payment_center", s.payment_center_port),
            ("ledger", s.ledger_port),
            ("risk", s.risk_port),
            ("notifier", s.notifier_port),
            ("gateway", s.gateway_port),
        ):
            self._wait_healthy(name, f"http://127.0.0.1:{port}/readyz")
        self._wait_healthy("demo_receiver", f"http://127.0.0.1:{s.demo_receiver_port}/healthz")
        self.info = PlatformInfo(
            api_base_url=api_url,
            psp_base_url=psp_url,
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

    def failed_process(self) -> str | None:
        """The name of a service process that has exited, if any."""
        for name, process in self._processes:
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
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
                    "card": {"basis_points": 290, "fixed_minor": 30},
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
