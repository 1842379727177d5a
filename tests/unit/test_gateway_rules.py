"""Pure gateway rules: error classification, request fingerprints, balance accounts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.domain import (
    display_prefix,
    hash_api_key,
    merchant_balance_bucket,
    request_fingerprint,
)
from services.gateway.models import CreatePaymentRequest
from services.gateway.problems import classify_validation_errors


def errors_for(body: dict[str, object]) -> list[dict[str, object]]:
    with pytest.raises(ValidationError) as caught:
        CreatePaymentRequest.model_validate(body)
    return [dict(error) for error in caught.value.errors()]


GOOD = {"amount": 100, "currency": "CNY", "channel": "alipay", "order_id": "o-1"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"currency": "XYZ"}, "unsupported_currency"),
        ({"currency": "cny"}, "unsupported_currency"),
        ({"amount": 0}, "invalid_amount"),
        ({"amount": 10**13}, "invalid_amount"),
        ({"amount": "100"}, "invalid_amount"),
        ({"amount": 1.5}, "invalid_amount"),
        ({"channel": "paypal"}, "invalid_request"),
        ({"order_id": ""}, "invalid_request"),
        ({"unexpected": True}, "invalid_request"),
    ],
)
def test_each_invalid_field_maps_to_one_stable_code(change: dict[str, object], code: str) -> None:
    classified, fields = classify_validation_errors(errors_for({**GOOD, **change}))
    assert classified == code
    assert fields and all(field.message for field in fields)


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    first = request_fingerprint("POST", "/v1/payments", {"a": 1, "b": 2})
    assert first == request_fingerprint("POST", "/v1/payments", {"b": 2, "a": 1})
    assert first != request_fingerprint("POST", "/v1/payments", {"a": 1, "b": 3})


def test_api_keys_are_hashed_and_shown_by_prefix_only() -> None:
    secret = "sk_test_abcdefghijklmnop"
    assert hash_api_key(secret) != secret.encode()
    assert len(hash_api_key(secret)) == 32
    assert display_prefix(secret) == "sk_test_abcd"


@pytest.mark.parametrize(
    ("account_id", "bucket"),
    [
        ("merchant:mch_1:pending", ("mch_1", "pending")),
        ("merchant:mch_1:available", ("mch_1", "available")),
        ("platform:fee_revenue", None),
        ("platform:channel_receivable:alipay", None),
        ("merchant::pending", None),
    ],
)
def test_only_merchant_accounts_feed_merchant_balances(
    account_id: str, bucket: tuple[str, str] | None
) -> None:
    assert merchant_balance_bucket(account_id) == bucket
