"""The subjects risk counts under a lock (a merchant, a payer, a channel), and the order
in which a consumer batch takes those locks.

A lock is PostgreSQL's transaction-scoped advisory lock of hashtext('risk:<subject>'). A
consumer batch is one transaction, so it holds every lock its events take until it
commits; `batch_lock_keys` names them all up front, and the consumer takes them in one
global order before any handler runs (`Subscription.lock_keys`). The handlers still lock
what they count: inside such a batch that is a re-entrant no-op, and it keeps every other
caller correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from schemas.payments import PaymentCreated, PaymentFailed, PaymentSucceeded
from schemas.refunds import RefundSucceeded
from schemas.risk import PayerKey
from services.risk import domain


def subject_lock_key(kind: str, subject: str) -> str:
    """The advisory lock key of one subject, e.g. ("payer", "mch_1:user-1")."""
    return f"risk:{kind}:{subject}"


def payer_subject(merchant_id: str, payer_id: str) -> str:
    """A payer as risk counts it: the merchant's own customer, since payer ids are the
    merchant's (`user-1` of one merchant is not `user-1` of another)."""
    return f"{merchant_id}:{payer_id}"


async def lock_subject(connection: asyncpg.Connection, kind: str, subject: str) -> None:
    """Hold the subject's lock until the transaction ends."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))", subject_lock_key(kind, subject)
    )


async def batch_lock_keys(connection: asyncpg.Connection, messages: Sequence[object]) -> list[str]:
    """Every lock key the handlers of `messages` may take (a superset is harmless)."""
    keys: list[str] = []
    failed_payment_ids: list[str] = []
    for message in messages:
        if isinstance(message, PaymentCreated):
            keys.append(subject_lock_key("merchant", message.merchant_id))
            payer_id = domain.payer_keys(message.payload.payer).get(PayerKey.PAYER)
            if payer_id is not None:
                keys.append(subject_lock_key("payer", payer_subject(message.merchant_id, payer_id)))
        elif isinstance(message, PaymentSucceeded | PaymentFailed):
            keys.append(subject_lock_key("channel", message.payload.channel.value))
            if isinstance(message, PaymentFailed):
                failed_payment_ids.append(message.aggregate_id)
        elif isinstance(message, RefundSucceeded):
            keys.append(subject_lock_key("merchant", message.merchant_id))
    if failed_payment_ids:
        # A failure is counted against its payer, whom only the decision remembers.
        rows = await connection.fetch(
            "SELECT DISTINCT merchant_id, payer_id FROM payment_observations"
            " WHERE payment_id = ANY($1::text[]) AND payer_id IS NOT NULL",
            failed_payment_ids,
        )
        keys.extend(
            subject_lock_key("payer", payer_subject(row["merchant_id"], row["payer_id"]))
            for row in rows
        )
    return keys
