"""Monitoring's checks on their edges: a channel's success rate, a merchant's refund rate
and a payer's failure burst."""

from __future__ import annotations

import pytest

from schemas.risk import RiskAlertKind
from services.risk.monitoring import (
    AlertThresholds,
    channel_alert,
    payer_failure_alert,
    refund_alert,
)

THRESHOLDS = AlertThresholds(
    channel_window=10,
    channel_minimum=4,
    channel_success_rate_min=0.5,
    refund_minimum_payments=10,
    refund_rate_max=0.3,
    payer_failures_max=5,
)


@pytest.mark.parametrize(
    ("outcomes", "alerts"),
    [
        ([True, False, False], False),  # too few to judge
        ([True, True, False, False], False),  # exactly at the minimum rate
        ([True, False, False, False], True),  # below it
        ([False] * 3 + [True] * 10, False),  # only the last 10 count: 7 of 10 succeeded
    ],
)
def test_a_channel_alerts_below_its_success_rate(outcomes: list[bool], alerts: bool) -> None:
    alert = channel_alert("wechat_pay", outcomes, THRESHOLDS)
    assert (alert is not None) is alerts
    if alert is not None:
        assert (alert.kind, alert.subject) == (RiskAlertKind.CHANNEL_SUCCESS_RATE_LOW, "wechat_pay")
        assert alert.value == 0.25


@pytest.mark.parametrize(
    ("payments", "refunds", "alerts"),
    [(9, 9, False), (10, 3, False), (10, 4, True), (100, 31, True), (100, 30, False)],
)
def test_a_merchant_alerts_above_its_refund_rate(payments: int, refunds: int, alerts: bool) -> None:
    alert = refund_alert("mch_1", payments, refunds, THRESHOLDS)
    assert (alert is not None) is alerts


@pytest.mark.parametrize(("failures", "alerts"), [(4, False), (5, True), (6, True)])
def test_a_payer_alerts_on_a_burst_of_failures(failures: int, alerts: bool) -> None:
    alert = payer_failure_alert("mch_1", "payer-1", failures, THRESHOLDS)
    assert (alert is not None) is alerts
    if alert is not None:
        assert alert.subject == "mch_1:payer-1"
        assert alert.message == (
            f"payer payer-1 of merchant mch_1: {failures} failed payments within 600 s"
        )
