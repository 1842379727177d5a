"""Watching the stream after the fact, pure: when a channel's success rate drops, a
merchant's refund rate spikes, or one payer fails payment after payment, operations are
alerted (a `RiskAlertRaised` event the notifier sends to the ops webhook).

Each check takes what the I/O edge counted and the thresholds, and says whether to alert.
An alert about one subject is raised at most once per cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.risk import RiskAlertKind, RiskAlertRaisedPayload

# RiskAlertRaisedPayload.subject holds at most this many characters.
SUBJECT_LENGTH_MAX = 128


@dataclass(frozen=True)
class AlertThresholds:
    channel_window: int = 50  # a channel's last N finished payments
    channel_minimum: int = 20  # fewer finished payments are not judged
    channel_success_rate_min: float = 0.5
    refund_window_hours: int = 24
    refund_minimum_payments: int = 10
    refund_rate_max: float = 0.3
    payer_failure_window_seconds: int = 600
    payer_failures_max: int = 5  # this many failures within the window alert
    cooldown_seconds: int = 3600


def channel_alert(
    channel: str, outcomes: list[bool], thresholds: AlertThresholds
) -> RiskAlertRaisedPayload | None:
    """`outcomes`: the channel's most recent finished payments, True when it succeeded."""
    recent = outcomes[: thresholds.channel_window]
    if len(recent) < thresholds.channel_minimum:
        return None
    rate = sum(recent) / len(recent)
    if rate >= thresholds.channel_success_rate_min:
        return None
    return RiskAlertRaisedPayload(
        kind=RiskAlertKind.CHANNEL_SUCCESS_RATE_LOW,
        subject=channel,
        value=round(rate, 4),
        threshold=thresholds.channel_success_rate_min,
        message=f"{channel}: {sum(recent)} of the last {len(recent)} payments succeeded "
        f"({rate:.0%}), below {thresholds.channel_success_rate_min:.0%}",
    )


def refund_alert(
    merchant_id: str, payments: int, refunds: int, thresholds: AlertThresholds
) -> RiskAlertRaisedPayload | None:
    """`payments` succeeded and `refunds` succeeded in the merchant's refund window."""
    if payments < thresholds.refund_minimum_payments:
        return None
    rate = refunds / payments
    if rate <= thresholds.refund_rate_max:
        return None
    return RiskAlertRaisedPayload(
        kind=RiskAlertKind.MERCHANT_REFUND_RATE_HIGH,
        subject=merchant_id,
        value=round(rate, 4),
        threshold=thresholds.refund_rate_max,
        message=f"merchant {merchant_id}: {refunds} refunds for {payments} payments in "
        f"{thresholds.refund_window_hours} h ({rate:.0%}), above {thresholds.refund_rate_max:.0%}",
    )


def payer_failure_alert(
    merchant_id: str, payer_id: str, failures: int, thresholds: AlertThresholds
) -> RiskAlertRaisedPayload | None:
    """`failures`: the failed payments within the window of the merchant's payer
    `payer_id` (payer ids are the merchant's own), this one included."""
    if failures < thresholds.payer_failures_max:
        return None
    # The subject names the merchant too; cut to the contract's length, which only a
    # pair of unusually long ids reaches.
    subject = f"{merchant_id}:{payer_id}"[:SUBJECT_LENGTH_MAX]
    return RiskAlertRaisedPayload(
        kind=RiskAlertKind.PAYER_FAILURE_BURST,
        subject=subject,
        value=float(failures),
        threshold=float(thresholds.payer_failures_max),
        message=f"payer {payer_id[:SUBJECT_LENGTH_MAX]} of merchant "
        f"{merchant_id[:SUBJECT_LENGTH_MAX]}: {failures} failed payments within "
        f"{thresholds.payer_failure_window_seconds} s",
    )
