from __future__ import annotations

from pydantic import Field, SecretStr

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    http_port: int = Field(default=8000, description="Port of the public HTTP API.")
    public_base_url: str = Field(
        default="", description="Base URL clients use; empty means http://{http_host}:{http_port}."
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Bearer key of the admin API (PAYRAIL_ADMIN_KEY); unset disables it.",
    )
    api_key_prefix: str = Field(default="sk_test_", description="Prefix of new merchant API keys.")
    payment_create_wait_ms: int = Field(
        default=5_000,
        ge=0,
        le=30_000,
        description="How long POST /v1/payments waits for the payment to reach the payer step.",
    )
    idempotency_key_retention_hours: int = Field(
        default=24,
        ge=1,
        le=24 * 30,
        description="How long an Idempotency-Key replays its first response.",
    )
    channel_health_cache_ms: int = Field(
        default=1_000,
        ge=0,
        le=60_000,
        description="How long the connector's view of each channel's circuit is reused when"
        " routing new payments.",
    )
    risk_url: str = Field(
        default="http://127.0.0.1:8003", description="Internal URL of the risk service."
    )
    ledger_url: str = Field(
        default="http://127.0.0.1:8002", description="Internal URL of the ledger service."
    )
    notifier_url: str = Field(
        default="http://127.0.0.1:8004", description="Internal URL of the notifier service."
    )

    @property
    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.http_host}:{self.http_port}"
