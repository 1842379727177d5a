"""The lock keys a risk consumer batch takes up front are exactly those its handlers take:
a payer's key names its merchant, since payer ids are the merchant's own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from schemas import new_event
from schemas.common import Channel, FeePlan
from schemas.payments import Payer, PaymentCreated, PaymentRequest
from services.risk.locks import batch_lock_keys, payer_subject, subject_lock_key

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Unused:
    """A connection no statement should reach: batches without failures ask nothing."""

    async def fetch(self, *_args: Any) -> list[Any]:
        raise AssertionError("no query expected")


def created(merchant_id: str, payer_id: str) -> PaymentCreated:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id="o-1",
            amount_minor=1_000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60),
            payer=Payer(id=payer_id),
        ),
        aggregate_id=payment_id,
        aggregate_version=1,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=NOW,
        correlation_id=payment_id,
        causation_id=None,
    )


def test_a_payer_key_is_scoped_to_its_merchant() -> None:
    assert payer_subject("mch_a", "user-1") != payer_subject("mch_b", "user-1")
    assert subject_lock_key("payer", payer_subject("mch_a", "user-1")) == "risk:payer:mch_a:user-1"


async def test_a_batch_locks_each_merchants_payer_as_the_handler_does() -> None:
    messages = [created("mch_a", "user-1"), created("mch_b", "user-1")]
    keys = await batch_lock_keys(Unused(), messages)  # type: ignore[arg-type]
    assert keys == [
        "risk:merchant:mch_a",
        "risk:payer:mch_a:user-1",
        "risk:merchant:mch_b",
        "risk:payer:mch_b:user-1",
    ]
