"""The Alipay-style signing protocol, shared by the PSP simulator and the gateway's adapter.

Pure functions only: no I/O, no clock, no logging. Parameters are a flat mapping of
strings. The canonical string joins `key=value` pairs with `&`, keys sorted ascending,
leaving out `sign`, `sign_type` and empty values; `sign` is the lowercase hex
HMAC-SHA256 of that string under the secret shared for one `app_id`.

Like the real protocol, the canonical string does not escape `&` or `=` inside values,
so two different parameter sets can share a canonical string. Receivers therefore check
that every field they rely on is present and well-formed in addition to the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

SIGN_TYPE: Final = "HMAC-SHA256"
SIGN_FIELD: Final = "sign"
SIGN_TYPE_FIELD: Final = "sign_type"

# Result codes of the PSP's JSON API.
CODE_SUCCESS: Final = "10000"
CODE_BUSINESS_FAILED: Final = "40004"

# `sub_code` values that accompany CODE_BUSINESS_FAILED.
SUB_CODE_INVALID_APP_ID: Final = "INVALID_APP_ID"
SUB_CODE_INVALID_SIGNATURE: Final = "INVALID_SIGNATURE"
SUB_CODE_INVALID_PARAMETER: Final = "INVALID_PARAMETER"
SUB_CODE_TRADE_CONFLICT: Final = "TRADE_CONFLICT"
SUB_CODE_TRADE_NOT_EXIST: Final = "TRADE_NOT_EXIST"
# The channel refuses the trade (risk control, account restrictions): a decline.
SUB_CODE_PAYMENT_REFUSED: Final = "PAYMENT_REFUSED"
# The trade's status forbids the request, e.g. closing a trade the payer already paid or
# refunding a trade the payer has not paid.
SUB_CODE_TRADE_STATUS_ERROR: Final = "TRADE_STATUS_ERROR"
# The refund's `out_request_no` was already used with another trade, amount or currency.
SUB_CODE_REFUND_CONFLICT: Final = "REFUND_CONFLICT"
# The refund, added to the trade's refunds still processing or succeeded, would exceed
# what the payer paid.
SUB_CODE_REFUND_AMOUNT_EXCEEDED: Final = "REFUND_AMOUNT_EXCEEDED"
# No refund has this `out_request_no` for this trade (answer of a refund query).
SUB_CODE_REFUND_NOT_EXIST: Final = "REFUND_NOT_EXIST"

# Trade statuses, as reported by queries and notifications.
TRADE_STATUS_WAIT_BUYER_PAY: Final = "WAIT_BUYER_PAY"
TRADE_STATUS_SUCCESS: Final = "TRADE_SUCCESS"
TRADE_STATUS_CLOSED: Final = "TRADE_CLOSED"
# Paid and no longer refundable; the simulator never reaches it, the real channel may.
TRADE_STATUS_FINISHED: Final = "TRADE_FINISHED"

# Refund statuses, as reported by refund answers, queries and notifications.
REFUND_STATUS_PROCESSING: Final = "REFUND_PROCESSING"
REFUND_STATUS_SUCCESS: Final = "REFUND_SUCCESS"
REFUND_STATUS_FAIL: Final = "REFUND_FAIL"

NOTIFY_TYPE_TRADE_STATUS_SYNC: Final = "trade_status_sync"
NOTIFY_TYPE_REFUND_STATUS_SYNC: Final = "refund_status_sync"

# The exact plain-text body a notification receiver answers to stop retries.
NOTIFY_ACKNOWLEDGEMENT: Final = "success"

PRECREATE_PATH: Final = "/alipay/v1/trades/precreate"
CLOSE_PATH: Final = "/alipay/v1/trades/close"
TRADE_QUERY_PATH_PREFIX: Final = "/alipay/v1/trades/"
REFUND_PATH: Final = "/alipay/v1/trades/refund"
# `GET {REFUND_QUERY_PATH_PREFIX}{out_request_no}?app_id=...&out_trade_no=...`
REFUND_QUERY_PATH_PREFIX: Final = "/alipay/v1/refunds/"
# The simulator loses every notification of a trade whose subject contains this marker.
LOSE_NOTIFICATIONS_MARKER: Final = "[psp:lose_notifications]"

_EXCLUDED_FIELDS: Final = frozenset({SIGN_FIELD, SIGN_TYPE_FIELD})


def canonical_string(params: Mapping[str, str]) -> str:
    """Return the string that is signed: sorted `key=value` pairs joined by `&`.

    `sign`, `sign_type` and parameters with empty values are left out.
    """
    return "&".join(
        f"{key}={params[key]}"
        for key in sorted(params)
        if key not in _EXCLUDED_FIELDS and params[key] != ""
    )


def sign(params: Mapping[str, str], secret: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of the canonical string of `params`."""
    digest = hmac.new(
        secret.encode("utf-8"), canonical_string(params).encode("utf-8"), hashlib.sha256
    )
    return digest.hexdigest()


def signed(params: Mapping[str, str], secret: str) -> dict[str, str]:
    """Return a copy of `params` with `sign_type` and `sign` set."""
    result = {key: value for key, value in params.items() if key not in _EXCLUDED_FIELDS}
    result[SIGN_TYPE_FIELD] = SIGN_TYPE
    result[SIGN_FIELD] = sign(result, secret)
    return result


def verify(params: Mapping[str, str], secret: str) -> bool:
    """Return True when `params["sign"]` is the signature of `params` under `secret`.

    The comparison takes constant time so a forger learns nothing from response timing.
    A missing `sign` is simply not valid. `sign_type` is not checked here; callers that
    accept several sign types check it before calling.
    """
    provided = params.get(SIGN_FIELD, "")
    if provided == "":
        return False
    expected = sign(params, secret)
    # Compare bytes: compare_digest refuses str arguments that are not pure ASCII.
    return hmac.compare_digest(expected.encode("ascii"), provided.encode("utf-8"))
