"""Payer notices' pure parts: the notice an event owes, its text, amounts in words, and
loading the configured sender."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from schemas import new_event
from schemas.common import Channel, FeePlan
from schemas.money import format_amount
from schemas.payments import PaymentSucceeded, PaymentSucceededPayload
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.notifier.payer_notices import (
    DEFAULT_SENDER,
    InvalidSender,
    LogNoticeSender,
    NoticeKind,
    load_sender,
    notice_for,
)
from services.notifier.settings import NotifierSettings
from tests.support.notice_senders import FLAKY, FlakySender

PAID_AT = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
COMMON: dict[str, Any] = {
    "aggregate_id": "pay_1",
    "aggregate_version": 3,
    "merchant_id": "mch_1",
    "producer": "payment_center",
    "occurred_at": PAID_AT,
    "correlation_id": "corr-1",
    "causation_id": None,
}


def succeeded(amount_minor: int = 12_34, currency: str = "CNY") -> PaymentSucceeded:
    payload = PaymentSucceededPayload(
        order_id="order-7",
        amount_minor=amount_minor,
        currency=currency,
        channel=Channel.ALIPAY,
        fee_plan=FeePlan(basis_points=60, fixed_minor=0),
        channel_trade_id="trade-1",
        paid_at=PAID_AT,
    )
    return new_event(PaymentSucceeded, payload, **COMMON)


def refunded() -> RefundSucceeded:
    payload = RefundSucceededPayload(
        refund_id="re_1",
        amount_minor=500,
        currency="JPY",
        channel=Channel.CARD,
        reason="damaged",
        initiator=RefundInitiator.MERCHANT,
        order_id="order-7",
        channel_refund_id="cre-1",
        succeeded_at=PAID_AT,
    )
    return new_event(RefundSucceeded, payload, **COMMON)


@pytest.mark.parametrize(
    ("amount_minor", "currency", "expected"),
    [
        (1234, "CNY", "12.34 CNY"),
        (5, "USD", "0.05 USD"),
        (-5, "USD", "-0.05 USD"),
        (100, "EUR", "1.00 EUR"),
        (500, "JPY", "500 JPY"),
        (10**12, "KRW", "1000000000000 KRW"),
        (7, "XXX", "7 XXX (minor units)"),
    ],
)
def test_amounts_read_as_people_read_them(amount_minor: int, currency: str, expected: str) -> None:
    assert format_amount(amount_minor, currency) == expected


def test_a_succeeded_payment_owes_its_payer_a_confirmation() -> None:
    notice = notice_for(succeeded(), "payer-42", "pn_1")

    assert notice.kind is NoticeKind.PAYMENT_CONFIRMATION
    assert (notice.payer_id, notice.merchant_id, notice.payment_id) == (
        "payer-42",
        "mch_1",
        "pay_1",
    )
    assert (notice.amount_minor, notice.currency, notice.refund_id) == (1234, "CNY", None)
    assert notice.occurred_at == PAID_AT
    assert notice.text == "Your payment of 12.34 CNY for order order-7 to merchant mch_1 succeeded."


def test_a_succeeded_refund_owes_its_payer_a_refund_notice() -> None:
    notice = notice_for(refunded(), "payer-42", "pn_2")

    assert notice.kind is NoticeKind.REFUND_NOTICE
    assert notice.refund_id == "re_1"
    assert notice.payment_id == "pay_1"
    assert notice.text == "500 JPY for order order-7 at merchant mch_1 was refunded to you."


async def test_the_default_sender_writes_the_notice_to_the_log() -> None:
    sender = load_sender(NotifierSettings().payer_notice_sender)
    assert NotifierSettings().payer_notice_sender == DEFAULT_SENDER
    assert isinstance(sender, LogNoticeSender)

    with capture_logs() as logs:
        await sender.send(notice_for(succeeded(), "payer-42", "pn_1"))

    assert logs == [
        {
            "event": "payer_notice",
            "log_level": "info",
            "notice_id": "pn_1",
            "kind": "payment_confirmation",
            "merchant_id": "mch_1",
            "payer_id": "payer-42",
            "payment_id": "pay_1",
            "refund_id": None,
            "text": "Your payment of 12.34 CNY for order order-7 to merchant mch_1 succeeded.",
        }
    ]


def test_a_sender_is_an_object_a_class_or_a_factory() -> None:
    assert load_sender("tests.support.notice_senders:FLAKY") is FLAKY
    assert isinstance(load_sender("tests.support.notice_senders:FlakySender"), FlakySender)
    made = load_sender("tests.support.notice_senders:make_flaky_sender")
    assert isinstance(made, FlakySender) and made is not FLAKY


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("tests.support.notice_senders", "module:attribute"),
        (":FLAKY", "module:attribute"),
        ("tests.support.no_such_module:FLAKY", "no_such_module"),
        ("tests.support.notice_senders:MISSING", "has no 'MISSING'"),
        ("tests.support.notice_senders:NotASender", "async send(notice)"),
        ("tests.support.notice_senders:PayerNotice", "without arguments"),
    ],
)
def test_a_sender_that_cannot_be_loaded_is_refused_with_the_reason(
    spec: str, complaint: str
) -> None:
    with pytest.raises(InvalidSender, match=re.escape(complaint)):
        load_sender(spec)


def test_the_sender_setting_must_name_module_and_attribute() -> None:
    with pytest.raises(ValueError, match="payer_notice_sender"):
        NotifierSettings(payer_notice_sender="not a module path")


def test_notice_ids_are_kept_as_given() -> None:
    notice_id = f"pn_{uuid.uuid4().hex}"
    assert notice_for(refunded(), "p", notice_id).notice_id == notice_id
