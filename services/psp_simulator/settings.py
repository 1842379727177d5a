"""Settings of the PSP simulator, read only from `PAYRAIL_PSP_*` environment variables.

A list setting is given as JSON, e.g. `PAYRAIL_PSP_NOTIFY_RETRY_SCHEDULE_MS='[0, 50, 100]'`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# One hour: longer waits between notification attempts only make tests and demos slower.
RETRY_DELAY_MS_MAX = 3_600_000

RetryDelayMs = Annotated[int, Field(ge=0, le=RETRY_DELAY_MS_MAX)]


class PspSimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYRAIL_PSP_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8100, ge=0, le=65_535, description="Port the HTTP server binds.")
    public_base_url: str = Field(
        default="",
        description=(
            "Base URL payers and the gateway use to reach the simulator, without a trailing "
            "slash. Empty (the default) means http://{host}:{port}."
        ),
    )
    alipay_app_id: str = Field(
        default="payrail_platform",
        min_length=1,
        description="The one Alipay app id (merchant account) the simulator knows.",
    )
    alipay_secret: str = Field(
        default="alipay-sandbox-secret",
        min_length=1,
        description="HMAC-SHA256 secret shared with the holder of alipay_app_id.",
    )
    wechat_pay_mch_id: str = Field(
        default="1900000109",
        min_length=1,
        description="The one WeChat Pay merchant id (mchid) the simulator knows.",
    )
    wechat_pay_api_v3_key: str = Field(
        default="wechatpay-sandbox-api-v3-key-32b",
        min_length=32,
        max_length=32,
        description=(
            "The 32-byte WeChat Pay APIv3 key shared with the holder of wechat_pay_mch_id: "
            "it signs requests, answers and notifications and encrypts notification resources."
        ),
    )
    card_merchant_account: str = Field(
        default="PayrailPlatform",
        min_length=1,
        description="The one card acquirer merchant account the simulator knows.",
    )
    card_api_key: str = Field(
        default="card-sandbox-api-key",
        min_length=1,
        description="API key the holder of card_merchant_account sends with every request.",
    )
    card_hmac_key: str = Field(
        default="card-sandbox-hmac-key",
        min_length=1,
        description="Key of the HMAC-SHA256 signature on the card acquirer's webhooks.",
    )
    bank_api_key: str = Field(
        default="bank-sandbox-api-key",
        min_length=1,
        description="API key payrail sends with every request to the bank rail.",
    )
    bank_hmac_key: str = Field(
        default="bank-sandbox-hmac-key",
        min_length=1,
        description="Key of the HMAC-SHA256 signature on the bank rail's notifications.",
    )
    payout_processing_ms: int = Field(
        default=200,
        ge=0,
        le=RETRY_DELAY_MS_MAX,
        description="How long the bank rail takes to pay (or fail) a payout it accepted.",
    )
    refund_processing_ms: int = Field(
        default=200,
        ge=0,
        le=RETRY_DELAY_MS_MAX,
        description=(
            "How long every channel takes to finish a refund it accepted before it notifies "
            "the result, default 200."
        ),
    )
    notify_retry_schedule_ms: list[RetryDelayMs] = Field(
        default=[0, 1000, 2000, 5000, 15000, 60000],
        min_length=1,
        max_length=20,
        description=(
            "Delay before each notification attempt, one entry per attempt: the first entry "
            "counts from the payment, each later one from the end of the previous attempt. "
            "Its length is the number of attempts; default [0, 1000, 2000, 5000, 15000, 60000]."
        ),
    )
    notify_timeout_ms: int = Field(
        default=5000,
        ge=1,
        le=60_000,
        description="Longest one notification attempt may take, default 5000.",
    )
    notify_concurrent_sends_max: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Notification attempts in flight at once, default 32.",
    )
    notify_pending_count_max: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description=(
            "Notifications waiting or being retried at once, default 10000; a payment beyond "
            "it is still recorded but not notified (the gateway can query the trade)."
        ),
    )
    duplicate_notify: bool = Field(
        default=False,
        description=(
            "Fault injection, default off: after a notification is acknowledged, send the "
            "same trade's notification once more with a new notify_id."
        ),
    )
    notify_drop_first_count: int = Field(
        default=0,
        ge=0,
        le=20,
        description=(
            "Fault injection, default 0: the first N attempts of every notification are "
            "skipped (counted as attempts but never sent), simulating lost callbacks."
        ),
    )
    trade_count_max: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Trades kept in memory, default 100000; precreate beyond it is refused.",
    )
    log_level: str = Field(default="INFO", description="Python log level name, default INFO.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto (the default) renders JSON unless stderr is a terminal."
    )

    @property
    def base_url(self) -> str:
        """The public base URL, without a trailing slash."""
        if self.public_base_url != "":
            return self.public_base_url.rstrip("/")
        # An IPv6 literal needs brackets in a URL.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
