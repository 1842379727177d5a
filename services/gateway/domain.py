"""Pure rules of the gateway: API key hashing, request fingerprints, projection mapping."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas import Event
from schemas.payments import (
    PaymentActionRequired,
    PaymentCanceled,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentHeldForReview,
    PaymentRiskApproved,
    PaymentSucceeded,
)

API_KEY_DISPLAY_PREFIX_LENGTH = 12

# The status the gateway shows before payment_center has recorded the payment.
RECEIVED_STATUS = "received"

# Statuses after which POST /v1/payments stops waiting: the payer can act, or it is over.
SETTLED_VIEW_STATUSES = frozenset(
    {"requires_payment", "in_review", "succeeded", "failed", "canceled", "expired"}
)
# Statuses no input changes any more.
FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "expired"})

STATUS_AFTER_EVENT: dict[type[Event], str] = {
    PaymentCreated: "awaiting_risk",
    PaymentHeldForReview: "in_review",
    PaymentRiskApproved: "submitting",
    PaymentActionRequired: "requires_payment",
    PaymentSucceeded: "succeeded",
    PaymentFailed: "failed",
    PaymentCanceled: "canceled",
    PaymentExpired: "expired",
}


def hash_api_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def display_prefix(secret: str) -> str:
    return secret[:API_KEY_DISPLAY_PREFIX_LENGTH]


def request_fingerprint(method: str, path: str, body: dict[str, Any]) -> bytes:
    """A hash of what the client asked for, to detect one Idempotency-Key reused for
    a different request. Key order and whitespace do not matter."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def merchant_balance_bucket(account_id: str) -> tuple[str, str] | None:
    """(merchant id, bucket) for `merchant:{id}:{bucket}` accounts, else None."""
    parts = account_id.split(":")
    if len(parts) == 3 and parts[0] == "merchant" and parts[1] and parts[2]:
        return parts[1], parts[2]
    return None
