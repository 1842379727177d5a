"""The risk service's use cases: deciding payments, keeping rules and the block list, and
manual review. Each runs in the caller's transaction.

State lives in PostgreSQL (`payment_observations`, `risk_rules`, `blocklist`,
`risk_reviews`), written in the same transaction as the decision event, so limits and
windows survive a restart and a redelivered payment is never counted twice (one
observation per payment id, one decision per payment stream version). Every count is the
merchant's own (a payer id is the merchant's); the block list is platform-wide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import structlog
from prometheus_client import Counter

from schemas.merchants import MerchantOnboarded, MerchantUpdated
from schemas.payments import PaymentCanceled, PaymentCreated, PaymentExpired
from schemas.risk import (
    BlocklistChanged,
    BlocklistChangedPayload,
    FiredRule,
    PayerKey,
    RiskDecisionMade,
    RiskDecisionMadePayload,
    RiskOutcome,
    RiskRules,
    RiskRulesUpdated,
    RiskRulesUpdatedPayload,
    upcast_rules_v1_v2,
)
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision, stream_version
from services.common.invariant import InvariantViolation
from services.risk import domain
from services.risk.locks import lock_subject, payer_subject

log = structlog.get_logger(__name__)

PRODUCER = "risk"
# Recent approved amounts of a merchant that anomaly scores compare against.
RECENT_AMOUNTS_MAX = 200
BLOCKLIST_STREAM = "risk:blocklist"

DECISIONS = Counter("payrail_risk_decisions_total", "Risk decisions by outcome.", ["outcome"])
RULES_FIRED = Counter("payrail_risk_rules_fired_total", "Risk rules that fired.", ["rule_id"])

_KEY_COLUMNS = {
    PayerKey.PAYER: "payer_id",
    PayerKey.IP: "ip",
    PayerKey.DEVICE: "device_id",
    PayerKey.CARD_FINGERPRINT: "card_fingerprint",
}


class ReviewNotOpen(Exception):
    """The payment is not waiting for a reviewer; `code` is for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def rules_stream(merchant_id: str) -> str:
    return f"risk_rules:{merchant_id}"


async def record_merchant_limits(
    connection: asyncpg.Connection, event: MerchantOnboarded | MerchantUpdated
) -> None:
    """Keep the merchant profile's single-payment limit; events of one merchant arrive in
    order."""
    await connection.execute(
        "INSERT INTO merchant_limits (merchant_id, single_payment_limit_minor) VALUES ($1, $2)"
        " ON CONFLICT (merchant_id) DO UPDATE"
        " SET single_payment_limit_minor = EXCLUDED.single_payment_limit_minor, updated_at = now()",
        event.merchant_id,
        event.payload.single_payment_limit_minor,
    )


async def load_rules(connection: Connection | asyncpg.Pool, merchant_id: str) -> RiskRules:
    """The merchant's rules, or the platform defaults when it has none of its own. Rules
    stored before amount limits were per currency are read as they were enforced."""
    stored = await connection.fetchval(
        "SELECT rules FROM risk_rules WHERE merchant_id = $1", merchant_id
    )
    if stored is None:
        return RiskRules()
    return RiskRules.model_validate(upcast_rules_v1_v2(stored))


async def _day_totals(
    connection: Connection,
    merchant_id: str,
    payer_id: str | None,
    currency: str,
    day: tuple[datetime, datetime],
) -> tuple[int, int]:
    """The merchant's (or, with `payer_id`, that payer's within the merchant) amount in
    `currency` and count of payments in every currency, over `day`, denied ones left out."""
    payer_filter = "" if payer_id is None else " AND payer_id = $6"
    row = await connection.fetchrow(
        "SELECT coalesce(sum(amount_minor) FILTER (WHERE currency = $2), 0) AS amount,"
        " count(*) AS count FROM payment_observations"
        " WHERE merchant_id = $1 AND observed_at >= $3 AND observed_at < $4 AND outcome <> $5"
        + payer_filter,
        merchant_id,
        currency,
        day[0],
        day[1],
        RiskOutcome.DENY.value,
        *(() if payer_id is None else (payer_id,)),
    )
    if row is None:
        raise InvariantViolation("an aggregate query returns one row")
    return int(row["amount"]), int(row["count"])


async def _velocity_times(
    connection: Connection,
    merchant_id: str,
    keys: dict[PayerKey, str],
    facts: domain.PaymentFacts,
    rules: RiskRules,
) -> dict[PayerKey, Sequence[datetime]]:
    """The merchant's earlier payments with each of the payer's values, within the
    longest window of that key (as many as its largest count can need)."""
    velocity_times: dict[PayerKey, Sequence[datetime]] = {}
    for key, value in keys.items():
        windows = [rule for rule in rules.velocity if rule.key is key]
        if not windows:
            continue
        longest = max(rule.window_seconds for rule in windows)
        rows = await connection.fetch(
            "SELECT observed_at FROM payment_observations WHERE merchant_id = $5"
            f" AND {_KEY_COLUMNS[key]} = $1"
            " AND observed_at > $2::timestamptz - make_interval(secs => $3)"
            " AND observed_at <= $2 ORDER BY observed_at DESC LIMIT $4",
            value,
            facts.occurred_at,
            longest,
            max(rule.max_count for rule in windows) + 1,
            merchant_id,
        )
        velocity_times[key] = [row["observed_at"] for row in rows]
    return velocity_times


async def load_history(
    connection: Connection, merchant_id: str, facts: domain.PaymentFacts, rules: RiskRules
) -> domain.RiskHistory:
    """What the rules need to know about earlier payments (this one never included):
    the merchant's own, except the block list, which is platform-wide."""
    day = domain.utc_day(facts.occurred_at)
    keys = domain.payer_keys(facts.payer)
    merchant_amount, merchant_count = await _day_totals(
        connection, merchant_id, None, facts.currency, day
    )
    payer_amount, payer_count = (0, 0)
    if PayerKey.PAYER in keys:
        payer_amount, payer_count = await _day_totals(
            connection, merchant_id, keys[PayerKey.PAYER], facts.currency, day
        )
    recent: list[int] = []
    if rules.anomaly_review_score is not None:
        recent = [
            row["amount_minor"]
            for row in await connection.fetch(
                "SELECT amount_minor FROM payment_observations WHERE merchant_id = $1"
                " AND currency = $2 AND outcome = $3 ORDER BY observed_at DESC LIMIT $4",
                merchant_id,
                facts.currency,
                RiskOutcome.APPROVE.value,
                RECENT_AMOUNTS_MAX,
            )
        ]
    blocked = frozenset(
        PayerKey(row["key"])
        for row in await connection.fetch(
            "SELECT key FROM blocklist WHERE (key, value) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[]))",
            [key.value for key in keys],
            list(keys.values()),
        )
    )
    return domain.RiskHistory(
        payer_day_amount_minor=payer_amount,
        payer_day_count=payer_count,
        merchant_day_amount_minor=merchant_amount,
        merchant_day_count=merchant_count,
        velocity_times=await _velocity_times(connection, merchant_id, keys, facts, rules),
        recent_amounts=recent,
        blocked=blocked,
    )


async def decide_payment(
    connection: asyncpg.Connection,
    event: PaymentCreated,
    *,
    clock: Clock,
    default_single_payment_limit_minor: int,
) -> None:
    """Decide a new payment once and remember it for the limits, windows and scores."""
    merchant_id = event.merchant_id
    terms = event.payload
    facts = domain.PaymentFacts(
        payment_id=event.aggregate_id,
        amount_minor=terms.amount_minor,
        currency=terms.currency,
        payer=terms.payer,
        occurred_at=event.occurred_at,
    )
    # Decisions of one merchant (and of one payer) are taken one at a time, so two
    # payments decided at once cannot both pass a limit that only one of them fits.
    # In a consumer batch these locks were taken already, in order (services/risk/locks.py).
    await lock_subject(connection, "merchant", merchant_id)
    keys = domain.payer_keys(terms.payer)
    payer_id = keys.get(PayerKey.PAYER)
    if payer_id is not None:
        await lock_subject(connection, "payer", payer_subject(merchant_id, payer_id))
    if await connection.fetchval(
        "SELECT true FROM payment_observations WHERE payment_id = $1", facts.payment_id
    ):
        log.info("risk_already_decided", payment_id=facts.payment_id)
        return
    rules = await load_rules(connection, merchant_id)
    profile_limit: int | None = await connection.fetchval(
        "SELECT single_payment_limit_minor FROM merchant_limits WHERE merchant_id = $1",
        merchant_id,
    )
    single_limit = domain.single_payment_limit(
        rules, facts.currency, profile_limit, default_single_payment_limit_minor
    )
    history = await load_history(connection, merchant_id, facts, rules)
    decision = domain.evaluate(facts, rules, single_limit, history)
    # The decision stream shares the payment's id, so its key keeps it in the payment's
    # partition and a redelivered PaymentCreated can never record a second decision.
    await record_decision(
        connection,
        Decision(events=(Emit(RiskDecisionMade, decision),)),
        stream_id=facts.payment_id,
        expected_version=0,
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=event,
    )
    await connection.execute(
        "INSERT INTO payment_observations (payment_id, merchant_id, payer_id, ip, device_id,"
        " card_fingerprint, amount_minor, currency, outcome, observed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        facts.payment_id,
        merchant_id,
        *(keys.get(key) for key in _KEY_COLUMNS),
        facts.amount_minor,
        facts.currency,
        decision.outcome.value,
        facts.occurred_at,
    )
    if decision.outcome is RiskOutcome.REVIEW:
        await connection.execute(
            "INSERT INTO risk_reviews (payment_id, merchant_id, amount_minor, currency, score,"
            " fired_rules, status, created_at) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb,"
            " 'pending', $7)",
            facts.payment_id,
            merchant_id,
            facts.amount_minor,
            facts.currency,
            decision.score,
            _rules_json(decision.fired_rules),
            clock.now(),
        )
    _count(decision)
    log.info(
        "risk_decided",
        payment_id=facts.payment_id,
        outcome=decision.outcome.value,
        score=decision.score,
        rules=[rule.rule_id for rule in decision.fired_rules],
    )


def _rules_json(rules: Sequence[FiredRule]) -> str:
    return "[" + ",".join(rule.model_dump_json() for rule in rules) + "]"


def _count(decision: RiskDecisionMadePayload) -> None:
    DECISIONS.labels(decision.outcome.value).inc()
    for rule in decision.fired_rules:
        RULES_FIRED.labels(rule.rule_id).inc()


async def resolve_review(
    connection: Connection, payment_id: str, *, approve: bool, reviewer: str, clock: Clock
) -> RiskDecisionMadePayload:
    """A reviewer's decision on a payment held for review, recorded as the payment's next
    risk decision. Raises ReviewNotOpen (`review_not_found`, `review_closed`)."""
    review = await connection.fetchrow(
        "SELECT * FROM risk_reviews WHERE payment_id = $1 FOR UPDATE", payment_id
    )
    if review is None:
        raise ReviewNotOpen("review_not_found", f"payment {payment_id} is not held for review")
    if review["status"] != "pending":
        raise ReviewNotOpen("review_closed", f"the review of {payment_id} is {review['status']}")
    held = [FiredRule.model_validate(rule) for rule in review["fired_rules"]]
    verdict = "approved" if approve else "denied"
    decision = RiskDecisionMadePayload(
        payment_id=payment_id,
        outcome=RiskOutcome.APPROVE if approve else RiskOutcome.DENY,
        score=review["score"],
        fired_rules=(
            *held,
            FiredRule(rule_id=domain.MANUAL_REVIEW_RULE, reason=f"{verdict} by {reviewer}"),
        ),
        reviewed_by=reviewer,
    )
    await record_decision(
        connection,
        Decision(events=(Emit(RiskDecisionMade, decision),)),
        stream_id=payment_id,
        expected_version=await stream_version(connection, payment_id),
        merchant_id=review["merchant_id"],
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=payment_id,
    )
    await connection.execute(
        "UPDATE risk_reviews SET status = $2, reviewed_by = $3, resolved_at = $4"
        " WHERE payment_id = $1",
        payment_id,
        verdict,
        reviewer,
        clock.now(),
    )
    # An approved payment counts towards the merchant's recent amounts from now on.
    await connection.execute(
        "UPDATE payment_observations SET outcome = $2 WHERE payment_id = $1",
        payment_id,
        decision.outcome.value,
    )
    _count(decision)
    return decision


async def close_review(
    connection: asyncpg.Connection, event: PaymentExpired | PaymentCanceled
) -> None:
    """A payment that expired or was canceled while held leaves the review queue."""
    await connection.execute(
        "UPDATE risk_reviews SET status = 'closed', resolved_at = $2"
        " WHERE payment_id = $1 AND status = 'pending'",
        event.aggregate_id,
        event.occurred_at,
    )


async def set_rules(
    connection: Connection, merchant_id: str, rules: RiskRules, *, clock: Clock
) -> None:
    """Replace the merchant's rules; the change is an event and applies to its next
    payment."""
    stream = rules_stream(merchant_id)
    await record_decision(
        connection,
        Decision(events=(Emit(RiskRulesUpdated, RiskRulesUpdatedPayload(rules=rules)),)),
        stream_id=stream,
        expected_version=await stream_version(connection, stream),
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=stream,
    )
    await connection.execute(
        "INSERT INTO risk_rules (merchant_id, rules, updated_at) VALUES ($1, $2::text::jsonb, $3)"
        " ON CONFLICT (merchant_id) DO UPDATE SET rules = EXCLUDED.rules,"
        " updated_at = EXCLUDED.updated_at",
        merchant_id,
        rules.model_dump_json(),
        clock.now(),
    )


async def change_blocklist(
    connection: Connection, change: BlocklistChangedPayload, *, clock: Clock
) -> bool:
    """Block or unblock a value; False when it was already so (nothing recorded)."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", BLOCKLIST_STREAM)
    present = bool(
        await connection.fetchval(
            "SELECT true FROM blocklist WHERE key = $1 AND value = $2",
            change.key.value,
            change.value,
        )
    )
    if present == change.blocked:
        return False
    await record_decision(
        connection,
        Decision(events=(Emit(BlocklistChanged, change),)),
        stream_id=BLOCKLIST_STREAM,
        expected_version=await stream_version(connection, BLOCKLIST_STREAM),
        merchant_id="platform",
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=BLOCKLIST_STREAM,
    )
    if change.blocked:
        await connection.execute(
            "INSERT INTO blocklist (key, value, reason, created_at) VALUES ($1, $2, $3, $4)",
            change.key.value,
            change.value,
            change.reason,
            clock.now(),
        )
    else:
        await connection.execute(
            "DELETE FROM blocklist WHERE key = $1 AND value = $2", change.key.value, change.value
        )
    log.info("blocklist_changed", key=change.key.value, blocked=change.blocked)
    return True
