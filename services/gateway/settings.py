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
    psp_base_url: str = Field(
        default="http://127.0.0.1:8100", description="Base URL of the PSP (simulator) API."
    )
    alipay_app_id: str = Field(default="payrail_platform", description="Our app id at Alipay.")
    alipay_secret: SecretStr = Field(
        default=SecretStr("alipay-sandbox-secret"), description="Alipay signing secret."
    )
    wechat_pay_mch_id: str = Field(default="1900000109", description="Our WeChat Pay mchid.")
    wechat_pay_api_v3_key: SecretStr = Field(
        default=SecretStr("wechatpay-sandbox-api-v3-key-32b"),
        description="WeChat Pay APIv3 key (32 bytes): signs and decrypts.",
    )
    card_merchant_account: str = Field(
        default="PayrailPlatform", description="Our merchant account at the card acquirer."
    )
    card_api_key: SecretStr = Field(
        default=SecretStr("card-sandbox-api-key"), description="Card acquirer API key."
    )
    card_hmac_key: SecretStr = Field(
        default=SecretStr("card-sandbox-hmac-key"), description="Card acquirer webhook HMAC key."
    )
    bank_api_key: SecretStr = Field(
        default=SecretStr("bank-sandbox-api-key"), description="Bank rail (payouts) API key."
    )
    bank_hmac_key: SecretStr = Field(
        default=SecretStr("bank-sandbox-hmac-key"),
        description="Bank rail notification HMAC key.",
    )
    channel_timeout_ms: int = Field(
        default=5_000, ge=100, le=60_000, description="Timeout of one call to a channel."
    )
    channel_circuit_failure_threshold: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Consecutive failed calls to a channel that open its circuit.",
    )
    channel_circuit_open_ms: int = Field(
        default=30_000,
        ge=0,
        le=3_600_000,
        description="How long an open circuit refuses calls before one is tried again.",
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
