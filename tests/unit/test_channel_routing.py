"""Routing new payments among a merchant's channels, and the circuit breaker that takes a
failing channel out of the route for a while."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.common import Channel, FeePlan
from services.common.clock import FixedClock
from services.gateway.circuit import ChannelCircuits, CircuitState
from services.gateway.intake import Merchant, PaymentRefused, choose_channel

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PLAN = FeePlan(basis_points=60, fixed_minor=0)


def merchant(*channels: Channel) -> Merchant:
    return Merchant(
        merchant_id="mch_1",
        active=True,
        channels=channels,
        fee_plans=dict.fromkeys(channels, PLAN),
        payment_expiry_minutes=30,
        refund_on_order_cancel=True,
    )


def circuits(threshold: int = 3, open_ms: int = 1000) -> tuple[ChannelCircuits, FixedClock]:
    clock = FixedClock(START)
    return ChannelCircuits(clock, failure_threshold=threshold, open_ms=open_ms), clock


def test_the_circuit_opens_at_the_threshold_of_consecutive_failures_only() -> None:
    breaker, _ = circuits(threshold=3)
    breaker.record_failure(Channel.CARD)
    breaker.record_failure(Channel.CARD)
    breaker.record_success(Channel.CARD)  # a success in between starts the count again
    breaker.record_failure(Channel.CARD)
    breaker.record_failure(Channel.CARD)
    assert breaker.state(Channel.CARD) is CircuitState.CLOSED
    breaker.record_failure(Channel.CARD)
    assert breaker.state(Channel.CARD) is CircuitState.OPEN
    assert not breaker.allows(Channel.CARD)
    assert breaker.allows(Channel.ALIPAY)


def test_an_open_circuit_half_opens_after_the_pause_and_one_result_decides() -> None:
    breaker, clock = circuits(threshold=1, open_ms=1000)
    breaker.record_failure(Channel.ALIPAY)
    clock.advance(timedelta(milliseconds=999))
    assert breaker.state(Channel.ALIPAY) is CircuitState.OPEN
    clock.advance(timedelta(milliseconds=1))
    assert breaker.state(Channel.ALIPAY) is CircuitState.HALF_OPEN
    assert breaker.allows(Channel.ALIPAY)
    breaker.record_failure(Channel.ALIPAY)  # the trial failed: open for another pause
    assert breaker.state(Channel.ALIPAY) is CircuitState.OPEN
    clock.advance(timedelta(seconds=1))
    breaker.record_success(Channel.ALIPAY)  # the trial succeeded: closed
    assert breaker.state(Channel.ALIPAY) is CircuitState.CLOSED


def test_routing_takes_the_first_enabled_channel_that_is_not_failing() -> None:
    shop = merchant(Channel.WECHAT_PAY, Channel.ALIPAY)
    breaker, _ = circuits(threshold=1)
    assert choose_channel(shop, [], breaker.allows) is Channel.WECHAT_PAY
    assert choose_channel(shop, [Channel.CARD, Channel.ALIPAY], breaker.allows) is Channel.ALIPAY
    breaker.record_failure(Channel.WECHAT_PAY)
    assert choose_channel(shop, [], breaker.allows) is Channel.ALIPAY
    with pytest.raises(PaymentRefused) as refused:
        choose_channel(shop, [Channel.WECHAT_PAY], breaker.allows)
    assert refused.value.code == "channel_unavailable"
    with pytest.raises(PaymentRefused) as not_enabled:
        choose_channel(shop, [Channel.CARD], breaker.allows)
    assert not_enabled.value.code == "channel_not_enabled"
