"""Read projections the API serves, built from events by idempotent consumers."""

from __future__ import annotations

import json

import asyncpg

from schemas import Event
from schemas.ledger import JournalEntryPosted, SettlementCreated
from schemas.payments import PaymentActionRequired, PaymentCreated, PaymentFailed
from schemas.public_events import PUBLIC_EVENT_TYPES, public_event_document
from schemas.refunds import RefundFailed, RefundRefused, RefundRequested, RefundSucceeded
from services.gateway.domain import STATUS_AFTER_EVENT, merchant_balance_bucket
from services.gateway.reports import PAYMENT_SUCCEEDED_KIND, payment_fee_minor


async def record_public_event(connection: asyncpg.Connection, event: Event) -> None:
    """Add `event` to its merchant's event list (GET /v1/events) when it is public."""
    if type(event) not in PUBLIC_EVENT_TYPES:
        return
    await connection.execute(
        "INSERT INTO merchant_events (event_id, merchant_id, type, created_at, document)"
        " VALUES ($1, $2, $3, $4, $5::text::jsonb) ON CONFLICT DO NOTHING",
        event.event_id,
        event.merchant_id,
        PUBLIC_EVENT_TYPES[type(event)],
        event.occurred_at,
        json.dumps(public_event_document(event)),
    )


async def project_payment_event(connection: asyncpg.Connection, event: Event) -> None:
    """Fold one payments.events event into the payment row, its timeline and, for a
    public event, the merchant's event list."""
    await record_public_event(connection, event)
    await connection.execute(
        "INSERT INTO payment_timeline"
        " (event_id, payment_id, event_type, aggregate_version, occurred_at, data)"
        " VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) ON CONFLICT DO NOTHING",
        event.event_id,
        event.aggregate_id,
        event.event_type,
        event.aggregate_version,
        event.occurred_at,
        event.payload.model_dump_json(),  # type: ignore[attr-defined]
    )
    if isinstance(event, RefundRequested | RefundRefused | RefundSucceeded | RefundFailed):
        await _project_refund_event(connection, event)
        return
    if type(event) not in STATUS_AFTER_EVENT:
        return  # a fact about the payment that leaves its status as it is
    if isinstance(event, PaymentCreated):
        terms = event.payload
        await connection.execute(
            "INSERT INTO payments (payment_id, merchant_id, order_id, amount_minor, currency,"
            " channel, description, status, version, created_at, updated_at, metadata,"
            " expires_at, splits)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11::text::jsonb, $12,"
            " $13::text::jsonb)"
            " ON CONFLICT DO NOTHING",
            event.aggregate_id,
            event.merchant_id,
            terms.order_id,
            terms.amount_minor,
            terms.currency,
            terms.channel.value,
            terms.description,
            STATUS_AFTER_EVENT[PaymentCreated],
            event.aggregate_version,
            event.occurred_at,
            json.dumps(terms.metadata),
            terms.expires_at,
            json.dumps(
                [
                    {"recipient": split.recipient_id, "amount": split.amount_minor}
                    for split in terms.splits
                ]
            ),
        )
        return
    next_action = (
        event.payload.next_action.model_dump() if isinstance(event, PaymentActionRequired) else None
    )
    failure = event.payload.failure.model_dump() if isinstance(event, PaymentFailed) else None
    # Events of one payment arrive in order on one partition; the version guard still
    # keeps a replayed older event from moving the row backwards.
    await connection.execute(
        "UPDATE payments SET status = $2, version = $3, updated_at = $4,"
        " next_action = CASE WHEN $2 = 'requires_payment' THEN $5::jsonb ELSE NULL END,"
        " failure = COALESCE($6::jsonb, failure)"
        " WHERE payment_id = $1 AND version < $3",
        event.aggregate_id,
        STATUS_AFTER_EVENT[type(event)],
        event.aggregate_version,
        event.occurred_at,
        next_action,
        failure,
    )


# Refund statuses as the API shows them.
REFUND_PENDING = "pending"
REFUND_SUCCEEDED = "succeeded"
REFUND_FAILED = "failed"
REFUND_REFUSED = "refused"


async def _project_refund_event(
    connection: asyncpg.Connection,
    event: RefundRequested | RefundRefused | RefundSucceeded | RefundFailed,
) -> None:
    if isinstance(event, RefundRequested):
        terms = event.payload
        await connection.execute(
            "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_minor, currency,"
            " channel, reason, initiator, status, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT DO NOTHING",
            terms.refund_id,
            event.aggregate_id,
            event.merchant_id,
            terms.amount_minor,
            terms.currency,
            terms.channel.value,
            terms.reason,
            terms.initiator.value,
            REFUND_PENDING,
            event.occurred_at,
        )
    elif isinstance(event, RefundRefused):
        refused = event.payload
        await connection.execute(
            "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_minor, currency,"
            " channel, reason, initiator, status, failure, created_at, updated_at)"
            " SELECT $1, payment_id, merchant_id, $2, currency, channel, '', 'merchant', $3,"
            " $4::text::jsonb, $5, $5 FROM payments WHERE payment_id = $6"
            " ON CONFLICT DO NOTHING",
            refused.refund_id,
            refused.requested_amount_minor,
            REFUND_REFUSED,
            refused.failure.model_dump_json(),
            event.occurred_at,
            event.aggregate_id,
        )
    elif isinstance(event, RefundSucceeded):
        updated = await connection.fetchval(
            "UPDATE refunds SET status = $2, channel_refund_id = $3, updated_at = $4"
            " WHERE refund_id = $1 AND status = $5 RETURNING amount_minor",
            event.payload.refund_id,
            REFUND_SUCCEEDED,
            event.payload.channel_refund_id,
            event.occurred_at,
            REFUND_PENDING,
        )
        if updated is not None:
            await connection.execute(
                "UPDATE payments SET amount_refunded_minor = amount_refunded_minor + $2,"
                " updated_at = GREATEST(updated_at, $3) WHERE payment_id = $1",
                event.aggregate_id,
                updated,
                event.occurred_at,
            )
    else:
        await connection.execute(
            "UPDATE refunds SET status = $2, failure = $3::text::jsonb, updated_at = $4"
            " WHERE refund_id = $1 AND status = $5",
            event.payload.refund_id,
            REFUND_FAILED,
            event.payload.failure.model_dump_json(),
            event.occurred_at,
            REFUND_PENDING,
        )


async def project_journal_entry(connection: asyncpg.Connection, event: JournalEntryPosted) -> None:
    """Add a journal entry's merchant postings to the merchants' balances, and keep the fee
    of a `payment_succeeded` entry for the operations reports.

    Merchant accounts are liabilities (credit-normal), so a balance is the negated sum.
    """
    entry = event.payload
    if entry.kind == PAYMENT_SUCCEEDED_KIND:
        # Keyed by the payment, not written into its row: the entry may arrive before the
        # payment's PaymentCreated (another topic), and the reports join the two.
        await connection.execute(
            "INSERT INTO payment_fees (payment_id, entry_id, currency, fee_minor, posted_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payment_id) DO NOTHING",
            entry.source_aggregate_id,
            entry.entry_id,
            entry.postings[0].currency,
            payment_fee_minor(entry.postings),
            event.occurred_at,
        )
    for posting in event.payload.postings:
        bucket = merchant_balance_bucket(posting.account_id)
        if bucket is None:
            continue
        merchant_id, name = bucket
        await connection.execute(
            "INSERT INTO balances (merchant_id, currency, bucket, amount_minor)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id, currency, bucket)"
            " DO UPDATE SET amount_minor = balances.amount_minor + EXCLUDED.amount_minor",
            merchant_id,
            posting.currency,
            name,
            -posting.amount_minor,
        )


async def project_settlement(connection: asyncpg.Connection, event: SettlementCreated) -> None:
    """Keep a merchant's settlement batch, with its lines, for the merchant API."""
    batch = event.payload
    await connection.execute(
        "INSERT INTO settlements (batch_id, merchant_id, currency, settlement_date, net_minor,"
        " lines, created_at) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7)"
        " ON CONFLICT DO NOTHING",
        batch.batch_id,
        event.merchant_id,
        batch.currency,
        batch.settlement_date,
        batch.net_minor,
        json.dumps([line.model_dump(mode="json") for line in batch.lines]),
        event.occurred_at,
    )
