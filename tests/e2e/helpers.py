"""Helpers of the end-to-end tests: bounded polling and request builders."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.common.launcher import PlatformInfo
from services.gateway.channels.alipay_protocol import signed

T = TypeVar("T")

# Every platform a test starts keeps its pools small: two test workers may each run a
# platform (or two instances of every service) against one PostgreSQL, whose 100
# connections the default pools (16 per process) would exhaust. Its consumers also wait
# less in the broker when idle, so the first payment after a pause between tests is not
# held up to half a second per hop while the other worker loads both cores.
SMALL_POOLS = {
    "PAYRAIL_DATABASE_POOL_SIZE_MAX": "4",
    "PAYRAIL_CONSUMER_CONCURRENCY_MAX": "2",
    "PAYRAIL_KAFKA_FETCH_MAX_WAIT_MS_IDLE": "250",
    # A batch held by a transient database error is retried within half a second.
    "PAYRAIL_CONSUMER_RETRY_BACKOFF_MS_MAX": "500",
    # A channel call whose outcome is unknown is made again after 0.2 s, then at most
    # every second, so a payment waits for a channel a test made fail only briefly.
    "PAYRAIL_OPERATION_RETRY_INITIAL_MS": "200",
    "PAYRAIL_OPERATION_RETRY_MAX_MS": "1000",
}


def eventually(probe: Callable[[], T | None], timeout_s: float = 30.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or probe}")


def new_payment(amount: int | float = 1999, **overrides: Any) -> dict[str, Any]:
    """A payment request body; `channels` in `overrides` replaces the default `channel`."""
    body = {
        "amount": amount,
        "currency": "CNY",
        "channel": "alipay",
        "order_id": f"order-{uuid.uuid4().hex[:10]}",
        "description": "Two coffees",
        **overrides,
    }
    if "channels" in overrides:
        del body["channel"]
    return body


def webhook_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def balance_of(api: httpx.Client, currency: str) -> dict[str, int]:
    balances = api.get("/v1/balance").json()["balances"]
    return next((b for b in balances if b["currency"] == currency), {"pending": 0, "available": 0})


def ledger_balance(platform: Any, account_prefix: str, currency: str = "CNY") -> int:
    """The sum of the ledger's balances of the accounts starting with `account_prefix`."""
    rows = httpx.get(
        f"http://127.0.0.1:{platform.settings.ledger_port}/internal/v1/balances",
        params={"account_prefix": account_prefix},
        timeout=5,
    ).json()
    return sum(row["balance_minor"] for row in rows if row["currency"] == currency)


def as_admin(info: PlatformInfo) -> httpx.Client:
    """A client with the platform's admin key (use it as a context manager)."""
    return httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.admin_key}"},
        timeout=30.0,
    )


def as_merchant(info: PlatformInfo, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=info.api_base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=15.0
    )


def signed_channel_notification(
    payment: dict[str, Any], notify_id: str, notify_time: int
) -> dict[str, str]:
    trade_no = payment["next_action"]["url"].rsplit("/", 1)[-1]
    fields = {
        "notify_id": notify_id,
        "notify_time": str(notify_time),
        "notify_type": "trade_status_sync",
        "app_id": "payrail_platform",
        "trade_no": trade_no,
        "out_trade_no": payment["id"],
        "trade_status": "TRADE_SUCCESS",
        "total_amount_minor": str(payment["amount"]),
        "currency": payment["currency"],
        "gmt_payment": "2026-11-22T10:00:00+00:00",
    }
    # The platform runs with the simulator's sandbox secret, so the test can sign as the
    # channel would: duplicates and replays are then refused for what they are, not for
    # a bad signature.
    return signed(fields, "alipay-sandbox-secret")
