"""Settings of the channel connector: the channels' and the bank rail's addresses and
keys, their timeouts, breakers and lanes, and the connector's own port."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr

from services.common.settings import ServiceSettings
from services.gateway.connector.lanes import LaneSettings


class ConnectorSettings(ServiceSettings):
    http_port: int = Field(
        default=8005, description="Port of the channels' and the bank's callbacks."
    )
    public_base_url: str = Field(
        default="",
        description="Base URL the channels call back; empty means http://{http_host}:{http_port}.",
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
        description="Consecutive calls to a rail without a definite answer that open its circuit.",
    )
    channel_circuit_open_ms: int = Field(
        default=30_000,
        ge=0,
        le=3_600_000,
        description="How long an open circuit refuses calls before one is tried again.",
    )
    lane_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Calls in flight at once per rail (each channel, and the bank): a slow"
        " rail holds only its own lane.",
    )
    operation_retry_initial_ms: int = Field(
        default=1_000,
        ge=10,
        le=600_000,
        description="Pause before calling again when a call left the outcome unknown; it"
        " doubles with each further unknown answer.",
    )
    operation_retry_max_ms: int = Field(
        default=60_000,
        ge=10,
        le=3_600_000,
        description="Longest pause between calls of an operation whose outcome is unknown.",
    )
    operation_unknown_alert_after_ms: int = Field(
        default=600_000,
        ge=1_000,
        le=7 * 24 * 3_600_000,
        description="An operation still without a definite answer this long after its first"
        " call is reported to operations (log error and metric).",
    )

    @property
    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.http_host}:{self.http_port}"

    def lane_settings(self) -> LaneSettings:
        return LaneSettings(
            concurrency=self.lane_concurrency,
            # A close that finds the trade paid makes a second call (its query).
            call_timeout=timedelta(milliseconds=2 * self.channel_timeout_ms + 1_000),
            retry_initial=timedelta(milliseconds=self.operation_retry_initial_ms),
            retry_max=timedelta(milliseconds=self.operation_retry_max_ms),
            unknown_alert_after=timedelta(milliseconds=self.operation_unknown_alert_after_ms),
        )
