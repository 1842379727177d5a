"""Monitoring's I/O edge: it keeps finished payments and refunds (once each, in the
consumer's transaction), counts what `monitoring` judges, and records the alerts."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import structlog

from schemas.payments import PaymentFailed, PaymentSucceeded
from schemas.refunds import RefundSucceeded
from schemas.risk import RiskAlertRaised, RiskAlertRaisedPayload
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision, stream_version
from services.risk import monitoring
from services.risk.locks import lock_subject, payer_subject

log = structlog.get_logger(__name__)

PRODUCER = "risk"
PLATFORM = "platform"
RISK_DECLINED = "risk_declined"


async def watch_payment(
    connection: asyncpg.Connection,
    event: PaymentSucceeded | PaymentFailed,
    *,
    clock: Clock,
    thresholds: monitoring.AlertThresholds,
) -> None:
    """Keep a finished payment and check its channel and its payer."""
    succeeded = isinstance(event, PaymentSucceeded)
    at_channel = succeeded or (
        isinstance(event, PaymentFailed) and event.payload.failure.code != RISK_DECLINED
    )
    # The payer as the decision remembers it: its merchant's own customer.
    observed = await connection.fetchrow(
        "SELECT merchant_id, payer_id FROM payment_observations WHERE payment_id = $1",
        event.aggregate_id,
    )
    payer_id = None if observed is None else observed["payer_id"]
    channel = event.payload.channel.value
    recorded = await connection.fetchval(
        "INSERT INTO payment_outcomes (payment_id, merchant_id, channel, payer_id, succeeded,"
        " at_channel, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT DO NOTHING RETURNING true",
        event.aggregate_id,
        event.merchant_id,
        channel,
        payer_id,
        succeeded,
        at_channel,
        event.occurred_at,
    )
    if not recorded:
        return  # seen before (a re-published event): counted once, judged once
    # Batches of other partitions may be counting the same channel or payer at the same
    # time: each count is taken under that subject's lock, after the rows of the batches
    # holding it have committed, so no alert is missed between two transactions that each
    # saw only their own rows.
    if at_channel:
        await lock_subject(connection, "channel", channel)
        rows = await connection.fetch(
            "SELECT succeeded FROM payment_outcomes WHERE channel = $1 AND at_channel"
            " ORDER BY finished_at DESC LIMIT $2",
            channel,
            thresholds.channel_window,
        )
        alert = monitoring.channel_alert(channel, [row["succeeded"] for row in rows], thresholds)
        await _raise(connection, alert, event.occurred_at, clock, thresholds)
    if not succeeded and observed is not None and payer_id is not None:
        payer_merchant_id = observed["merchant_id"]
        await lock_subject(connection, "payer", payer_subject(payer_merchant_id, payer_id))
        # Partitions are applied side by side, so a payer's failures may be judged out of
        # time order: the window ending at this failure, and the one ending at the payer's
        # latest failure seen so far, whichever holds more.
        window = timedelta(seconds=thresholds.payer_failure_window_seconds)
        failures = await connection.fetchval(
            "WITH failed AS (SELECT finished_at FROM payment_outcomes"
            "                WHERE merchant_id = $5 AND payer_id = $1 AND NOT succeeded),"
            " latest AS (SELECT max(finished_at) AS at FROM failed)"
            " SELECT greatest("
            "   (SELECT count(*) FROM failed WHERE finished_at > $2 AND finished_at <= $3),"
            "   (SELECT count(*) FROM failed, latest"
            "    WHERE finished_at > latest.at - $4::interval AND finished_at <= latest.at))",
            payer_id,
            event.occurred_at - window,
            event.occurred_at,
            window,
            payer_merchant_id,
        )
        alert = monitoring.payer_failure_alert(
            payer_merchant_id, payer_id, int(failures), thresholds
        )
        await _raise(connection, alert, event.occurred_at, clock, thresholds)


async def watch_refund(
    connection: asyncpg.Connection,
    event: RefundSucceeded,
    *,
    clock: Clock,
    thresholds: monitoring.AlertThresholds,
) -> None:
    """Keep a succeeded refund and check the merchant's refund rate."""
    recorded = await connection.fetchval(
        "INSERT INTO refund_outcomes (refund_id, merchant_id, succeeded_at) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        event.payload.refund_id,
        event.merchant_id,
        event.occurred_at,
    )
    if not recorded:
        return
    # As in watch_payment: the merchant's refunds are counted under its lock.
    await lock_subject(connection, "merchant", event.merchant_id)
    since = event.occurred_at - timedelta(hours=thresholds.refund_window_hours)
    counts = await connection.fetchrow(
        "SELECT (SELECT count(*) FROM payment_outcomes WHERE merchant_id = $1 AND succeeded"
        "        AND finished_at > $2 AND finished_at <= $3) AS payments,"
        "       (SELECT count(*) FROM refund_outcomes WHERE merchant_id = $1"
        "        AND succeeded_at > $2 AND succeeded_at <= $3) AS refunds",
        event.merchant_id,
        since,
        event.occurred_at,
    )
    if counts is None:
        return
    alert = monitoring.refund_alert(
        event.merchant_id, int(counts["payments"]), int(counts["refunds"]), thresholds
    )
    await _raise(connection, alert, event.occurred_at, clock, thresholds)


async def _raise(
    connection: Connection,
    alert: RiskAlertRaisedPayload | None,
    at: datetime,
    clock: Clock,
    thresholds: monitoring.AlertThresholds,
) -> None:
    if alert is None:
        return
    stream = f"risk_alerts:{alert.kind.value}:{alert.subject}"
    # One alert per subject at a time: concurrent checks of one subject queue here.
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", stream)
    recent = await connection.fetchval(
        "SELECT true FROM risk_alerts WHERE kind = $1 AND subject = $2 AND raised_at > $3",
        alert.kind.value,
        alert.subject,
        at - timedelta(seconds=thresholds.cooldown_seconds),
    )
    if recent:
        return
    await record_decision(
        connection,
        Decision(events=(Emit(RiskAlertRaised, alert),)),
        stream_id=stream,
        expected_version=await stream_version(connection, stream),
        merchant_id=PLATFORM,
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=stream,
    )
    await connection.execute(
        "INSERT INTO risk_alerts (kind, subject, message, raised_at) VALUES ($1, $2, $3, $4)",
        alert.kind.value,
        alert.subject,
        alert.message,
        at,
    )
    log.warning("risk_alert_raised", kind=alert.kind.value, subject=alert.subject)
