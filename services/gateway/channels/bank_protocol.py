"""The bank rail's wire protocol, shared by the gateway's client and the PSP simulator.

A credit-transfer API in the style of a bank's corporate payouts API:

- `POST /bank/v1/payouts` with `X-API-Key` and JSON `{"reference", "amount", "currency",
  "beneficiary", "notify_url"}` (amount in minor units; `reference` is payrail's payout
  id and the idempotency key): 202 `{"reference", "bank_reference", "status":
  "processing"}`. The same reference again with the same amount and currency gets the
  same answer; with another, 422 `reference_conflict`.
- `GET /bank/v1/payouts/{reference}`: `{"reference", "bank_reference", "status",
  "failure_reason"}` with status `processing`, `paid` or `failed`.
- The final status is notified to `notify_url` as JSON `{"notification_id", "reference",
  "bank_reference", "status", "failure_reason"}`, signed with header `Bank-Signature`:
  the hex HMAC-SHA256 of the raw body under the shared key. Any 2xx acknowledges it.

Errors answer `{"error", "message"}`: 401 wrong key, 404 unknown payout, 422 invalid or
conflicting request, 503 unavailable.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

PAYOUTS_PATH: Final = "/bank/v1/payouts"
API_KEY_HEADER: Final = "x-api-key"
SIGNATURE_HEADER: Final = "bank-signature"

STATUS_PROCESSING: Final = "processing"
STATUS_PAID: Final = "paid"
STATUS_FAILED: Final = "failed"

ERROR_REFERENCE_CONFLICT: Final = "reference_conflict"
ERROR_INVALID_REQUEST: Final = "invalid_request"
ERROR_UNAUTHORIZED: Final = "unauthorized"
ERROR_NOT_FOUND: Final = "payout_not_found"
# Why the simulator's `fail_payouts` fault fails a payout.
FAILURE_ACCOUNT_CLOSED: Final = "account_closed"


class PayoutInstruction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(min_length=1, max_length=128)
    amount: int = Field(gt=0, le=10**15)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    beneficiary: str = Field(min_length=1, max_length=128)
    notify_url: str = Field(min_length=1, max_length=2048)


class PayoutNotification(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    notification_id: str = Field(min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=128)
    bank_reference: str = Field(min_length=1, max_length=128)
    status: Literal["paid", "failed"]
    failure_reason: str | None = Field(default=None, max_length=200)


def signature(body: bytes, key: str) -> str:
    """The `Bank-Signature` of a notification body."""
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(body: bytes, presented: str, key: str) -> bool:
    """Whether `presented` is the body's signature (compared in constant time)."""
    return hmac.compare_digest(signature(body, key), presented.strip().lower())
