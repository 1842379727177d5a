"""The card acquirer's protocol (Adyen-style), shared by the PSP simulator and the gateway's
adapter.

Pure functions and constants only: no I/O, no clock, no logging.

API: JSON over HTTP. Every request carries `X-API-Key`; every POST also carries
`Idempotency-Key` (payrail's payment id for authorise, capture and cancel, payrail's refund
id for refunds). Keys are scoped per operation, so one payment id keys the authorisation,
the capture and the cancel of its payment. Amounts are `{"value": <int minor units>,
"currency": "<ISO 4217>"}`. Answers are not signed: like the real acquirer's API they are
authenticated by the transport (TLS to a known host). Errors answer
`{"status", "errorCode", "message"}`, with `errorCode` one of the ERROR_CODE_* values.

Webhooks: one JSON object per request,
`{"live": "false", "notificationItems": [{"NotificationRequestItem": {...}}]}` holding
exactly one item, acknowledged by a 2xx answer whose body is `[accepted]`. The item's
`additionalData.hmacSignature` is the base64 HMAC-SHA256, keyed with the UTF-8 bytes of
the shared HMAC key, of

    pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:
    eventCode:success:paymentReference

(one line, parts joined by `:`, a missing part as the empty string). The first eight parts
are the acquirer's standard notification signature. The ninth, `paymentReference` (in
`additionalData`), is payrail's extension: it is payrail's payment id, which a REFUND
webhook (whose `merchantReference` is the refund id) would otherwise not carry under the
signature. Unlike the acquirer's notification signature, `\\` and `:` inside a part are
escaped as `\\\\` and `\\:`, so no two different items share a signing string; for payrail's
ids, which contain neither, the string is the standard one. `eventDate` is not signed (as
with the real acquirer): its freshness check bounds honest delays only, and replays are
harmless because every notification id derives from signed references.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Final, TypeGuard
from urllib.parse import quote

API_KEY_HEADER: Final = "X-API-Key"
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"

PAYMENTS_PATH: Final = "/card/v1/payments"
_PAYMENTS_BY_REFERENCE_PATH: Final = "/card/v1/payments/by-reference"
_REFUNDS_BY_REFERENCE_PATH: Final = "/card/v1/refunds/by-reference"

# `resultCode` of an authorisation.
RESULT_CODE_AUTHORISED: Final = "Authorised"
RESULT_CODE_REFUSED: Final = "Refused"

# Payment statuses, as the query by reference reports them.
PAYMENT_STATUS_AUTHORISED: Final = "authorised"
PAYMENT_STATUS_CAPTURED: Final = "captured"
PAYMENT_STATUS_CANCELLED: Final = "cancelled"
PAYMENT_STATUS_REFUSED: Final = "refused"
PAYMENT_STATUSES: Final = frozenset(
    {
        PAYMENT_STATUS_AUTHORISED,
        PAYMENT_STATUS_CAPTURED,
        PAYMENT_STATUS_CANCELLED,
        PAYMENT_STATUS_REFUSED,
    }
)

# The `status` of a capture answer.
CAPTURE_STATUS_CAPTURED: Final = "captured"

# Refund statuses: accepted and processing, then finished one way or the other.
REFUND_STATUS_RECEIVED: Final = "received"
REFUND_STATUS_REFUNDED: Final = "refunded"
REFUND_STATUS_FAILED: Final = "failed"

# `errorCode` values of error answers, with their HTTP status.
ERROR_CODE_INVALID_API_KEY: Final = "invalid_api_key"  # 401
ERROR_CODE_MERCHANT_ACCOUNT_NOT_ALLOWED: Final = "merchant_account_not_allowed"  # 403
ERROR_CODE_PAYMENT_NOT_FOUND: Final = "payment_not_found"  # 404
ERROR_CODE_REFUND_NOT_FOUND: Final = "refund_not_found"  # 404
ERROR_CODE_VALIDATION_FAILED: Final = "validation_failed"  # 422
# The Idempotency-Key was used before, for the same operation, with another request.
ERROR_CODE_IDEMPOTENCY_KEY_CONFLICT: Final = "idempotency_key_conflict"  # 422
# The merchant reference names a payment (or refund) with another amount or currency.
ERROR_CODE_REFERENCE_CONFLICT: Final = "reference_conflict"  # 422
ERROR_CODE_PAYMENT_REFUSED: Final = "payment_refused"  # 422, capture of a refused payment
ERROR_CODE_PAYMENT_CANCELLED: Final = "payment_cancelled"  # 422, capture of a cancelled one
ERROR_CODE_INVALID_CAPTURE_AMOUNT: Final = "invalid_capture_amount"  # 422, only full captures
ERROR_CODE_PAYMENT_CAPTURED: Final = "payment_captured"  # 422, cancel of a captured payment
ERROR_CODE_PAYMENT_NOT_CAPTURED: Final = "payment_not_captured"  # 422, refund before capture
ERROR_CODE_CURRENCY_MISMATCH: Final = "currency_mismatch"  # 422, refund in another currency
ERROR_CODE_REFUND_EXCEEDS_CAPTURED: Final = "refund_exceeds_captured"  # 422
ERROR_CODE_STORE_FULL: Final = "store_full"  # 503

# Webhook event codes.
EVENT_CODE_AUTHORISATION: Final = "AUTHORISATION"
EVENT_CODE_CAPTURE: Final = "CAPTURE"
EVENT_CODE_REFUND: Final = "REFUND"

NOTIFICATION_ITEMS_FIELD: Final = "notificationItems"
NOTIFICATION_REQUEST_ITEM_FIELD: Final = "NotificationRequestItem"
ADDITIONAL_DATA_FIELD: Final = "additionalData"
HMAC_SIGNATURE_FIELD: Final = "hmacSignature"
PAYMENT_REFERENCE_FIELD: Final = "paymentReference"
# The exact body a webhook receiver answers to stop retries.
NOTIFICATION_ACKNOWLEDGEMENT: Final = "[accepted]"

# The simulator declines a new payment whose description contains this marker, as a test
# card number would at a real acquirer, with this reason (ISO 8583 response code 51).
DECLINE_MARKER: Final = "[psp:decline]"
DECLINE_REFUSAL_REASON: Final = "Insufficient Funds"
DECLINE_REFUSAL_REASON_CODE: Final = "51"

# Ids end up in contracts that cap them at 128 characters.
REFERENCE_LENGTH_MAX: Final = 128
# Up to 18 digits keeps every amount inside a signed 64-bit integer.
AMOUNT_VALUE_MAX: Final = 10**18 - 1

_CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class NotificationItem:
    """The fields of one webhook item, except its signature.

    Absent optional parts are empty strings: `original_reference` (only on modifications
    of a payment), `reason` (only on failures), `payment_reference` (payrail's payment id,
    see the module docstring).
    """

    event_code: str
    success: bool
    psp_reference: str
    original_reference: str
    merchant_account_code: str
    merchant_reference: str
    amount_value: int
    currency: str
    event_date: str
    payment_reference: str
    reason: str = ""


def payment_by_reference_path(reference: str) -> str:
    """`GET` here queries the payment whose merchant reference is `reference`."""
    return f"{_PAYMENTS_BY_REFERENCE_PATH}/{_segment(reference)}"


def cancel_by_reference_path(reference: str) -> str:
    """`POST` here cancels the uncaptured payment whose merchant reference is `reference`."""
    return f"{payment_by_reference_path(reference)}/cancels"


def refund_by_payment_reference_path(reference: str) -> str:
    """`POST` here refunds the payment whose merchant reference is `reference`."""
    return f"{payment_by_reference_path(reference)}/refunds"


def capture_path(psp_reference: str) -> str:
    """`POST` here captures the authorisation `psp_reference`."""
    return f"{PAYMENTS_PATH}/{_segment(psp_reference)}/captures"


def refund_path(psp_reference: str) -> str:
    """`POST` here refunds the payment whose authorisation is `psp_reference`."""
    return f"{PAYMENTS_PATH}/{_segment(psp_reference)}/refunds"


def refund_by_reference_path(refund_reference: str) -> str:
    """`GET` here queries the refund whose merchant reference is `refund_reference`."""
    return f"{_REFUNDS_BY_REFERENCE_PATH}/{_segment(refund_reference)}"


def is_valid_reference(value: object) -> TypeGuard[str]:
    """A reference or id: 1 to REFERENCE_LENGTH_MAX printable characters."""
    return isinstance(value, str) and 0 < len(value) <= REFERENCE_LENGTH_MAX and value.isprintable()


def is_valid_amount_value(value: object) -> TypeGuard[int]:
    """A positive whole number of minor units; JSON `true` is not a number here."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= AMOUNT_VALUE_MAX


def is_valid_currency(value: object) -> TypeGuard[str]:
    """An ISO 4217 code: exactly three uppercase ASCII letters."""
    return isinstance(value, str) and _CURRENCY_PATTERN.fullmatch(value) is not None


def signing_string(item: NotificationItem) -> str:
    """Return the string the webhook signature covers (see the module docstring)."""
    parts = (
        item.psp_reference,
        item.original_reference,
        item.merchant_account_code,
        item.merchant_reference,
        str(item.amount_value),
        item.currency,
        item.event_code,
        "true" if item.success else "false",
        item.payment_reference,
    )
    return ":".join(_escaped(part) for part in parts)


def hmac_signature(item: NotificationItem, hmac_key: str) -> str:
    """Return the base64 HMAC-SHA256 of the signing string, keyed with `hmac_key` as UTF-8."""
    digest = hmac.new(
        hmac_key.encode("utf-8"), signing_string(item).encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_hmac_signature(item: NotificationItem, signature: str, hmac_key: str) -> bool:
    """Return True when `signature` is the signature of `item` under `hmac_key`.

    The comparison takes constant time so a forger learns nothing from response timing;
    an empty signature is simply not valid.
    """
    if signature == "":
        return False
    expected = hmac_signature(item, hmac_key)
    # Compare bytes: compare_digest refuses str arguments that are not pure ASCII.
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8"))


def notification_request_item(item: NotificationItem, hmac_key: str) -> dict[str, object]:
    """Return the signed JSON object of one `NotificationRequestItem`."""
    additional_data = {HMAC_SIGNATURE_FIELD: hmac_signature(item, hmac_key)}
    if item.payment_reference != "":
        additional_data[PAYMENT_REFERENCE_FIELD] = item.payment_reference
    fields: dict[str, object] = {
        "eventCode": item.event_code,
        "success": "true" if item.success else "false",
        "pspReference": item.psp_reference,
        "merchantAccountCode": item.merchant_account_code,
        "merchantReference": item.merchant_reference,
        "amount": {"value": item.amount_value, "currency": item.currency},
        "eventDate": item.event_date,
        ADDITIONAL_DATA_FIELD: additional_data,
    }
    if item.original_reference != "":
        fields["originalReference"] = item.original_reference
    if item.reason != "":
        fields["reason"] = item.reason
    return fields


def notification_body(item: NotificationItem, hmac_key: str) -> bytes:
    """Return the UTF-8 JSON body of a webhook that carries `item` alone."""
    document = {
        "live": "false",
        NOTIFICATION_ITEMS_FIELD: [
            {NOTIFICATION_REQUEST_ITEM_FIELD: notification_request_item(item, hmac_key)}
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def is_acknowledgement(status_code: int, body: bytes) -> bool:
    """A webhook receiver stops retries only with a 2xx answer whose body is `[accepted]`."""
    return 200 <= status_code < 300 and body.strip() == NOTIFICATION_ACKNOWLEDGEMENT.encode()


def _escaped(part: str) -> str:
    return part.replace("\\", "\\\\").replace(":", "\\:")


def _segment(value: str) -> str:
    """Percent-encode `value` as one path segment, `/` included."""
    return quote(value, safe="")
