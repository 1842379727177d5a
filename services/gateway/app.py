"""Wiring of the gateway process: the public and admin HTTP API and the projections it
reads. The channels, the bank rail and their callbacks are the connector's
(services/gateway/connector/)."""

from __future__ import annotations

from functools import partial

import httpx
from fastapi import FastAPI

from schemas import Message, Topic
from schemas.ledger import JournalEntryPosted, SettlementCreated
from schemas.orders import OrderCancelled, OrderPlaced
from schemas.payments import PaymentPaidAfterClose
from schemas.payouts import PayoutCreated, PayoutFailed, PayoutPaid
from schemas.refunds import (
    RefundFailed,
    RefundRefused,
    RefundRequested,
    RefundSucceeded,
)
from schemas.webhooks import WebhookEndpointDisabled
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.gateway import (
    adjustments_api,
    admin_api,
    balance_transactions_api,
    events_api,
    orders,
    payments_api,
    payouts,
    payouts_api,
    projections,
    refunds_api,
    reports_api,
    risk_api,
    settlements_api,
    webhooks_api,
)
from services.gateway.channel_health import ChannelHealth
from services.gateway.domain import STATUS_AFTER_EVENT
from services.gateway.payment_updates import PaymentUpdates
from services.gateway.problems import install_problem_handlers
from services.gateway.settings import GatewaySettings

# Timeout of the gateway's calls to the internal services (ledger, risk, notifier).
INTERNAL_TIMEOUT_S = 5.0

# Every payment event the gateway folds into its payment views and timelines.
PROJECTED_PAYMENT_EVENTS: tuple[type[Message], ...] = (
    *STATUS_AFTER_EVENT,
    PaymentPaidAfterClose,
    RefundRequested,
    RefundRefused,
    RefundSucceeded,
    RefundFailed,
)


def create_app(settings: GatewaySettings | None = None, clock: Clock | None = None) -> FastAPI:
    gateway_settings = settings or GatewaySettings()
    app = FastAPI(
        title="payrail API",
        version="0.1.0",
        description=(
            "Payments for e-commerce. Amounts are integer minor units. Errors are RFC 9457"
            " problem details with a stable `code`."
        ),
    )
    app.state.gateway_settings = gateway_settings
    install_problem_handlers(app)
    for module in (
        payments_api,
        refunds_api,
        events_api,
        admin_api,
        settlements_api,
        webhooks_api,
    ):
        app.include_router(module.router)
    app.include_router(settlements_api.admin)
    app.include_router(payouts_api.router)
    app.include_router(payouts_api.admin)
    app.include_router(adjustments_api.admin)
    app.include_router(risk_api.admin)
    app.include_router(reports_api.router)
    app.include_router(balance_transactions_api.router)

    async def wire(context: ServiceContext) -> None:
        timeout = httpx.Timeout(INTERNAL_TIMEOUT_S)
        notifier_client = httpx.AsyncClient(base_url=gateway_settings.notifier_url, timeout=timeout)
        ledger_client = httpx.AsyncClient(base_url=gateway_settings.ledger_url, timeout=timeout)
        risk_client = httpx.AsyncClient(base_url=gateway_settings.risk_url, timeout=timeout)
        context.on_stop.append(risk_client.aclose)
        app.state.risk_client = risk_client
        context.on_stop.extend([notifier_client.aclose, ledger_client.aclose])
        app.state.channel_health = ChannelHealth(
            context.pool, context.clock, cache_ms=gateway_settings.channel_health_cache_ms
        )
        payment_updates = PaymentUpdates(context.pool)
        await payment_updates.start()
        context.on_stop.append(payment_updates.stop)
        context.after_batch.append(payment_updates.after_batch)
        app.state.payment_updates = payment_updates
        app.state.notifier_client = notifier_client
        app.state.ledger_client = ledger_client
        context.consume(
            Topic.PAYMENTS_EVENTS,
            dict.fromkeys(PROJECTED_PAYMENT_EVENTS, projections.project_payment_event),
        )
        context.consume(
            Topic.LEDGER_EVENTS,
            {
                JournalEntryPosted: projections.project_journal_entry,
                SettlementCreated: projections.project_settlement,
                PayoutCreated: payouts.project_payout,
                PayoutPaid: payouts.project_payout,
                PayoutFailed: payouts.project_payout,
            },
        )
        context.consume(
            Topic.NOTIFIER_EVENTS,
            {WebhookEndpointDisabled: projections.record_public_event},
        )
        context.consume(
            Topic.ORDERS,
            {
                OrderPlaced: partial(orders.place_order, clock=context.clock),
                OrderCancelled: partial(orders.cancel_order, clock=context.clock),
            },
        )

    return create_service_app(
        "gateway",
        gateway_settings,
        migration_packages=["services.gateway.migrations"],
        wiring=wire,
        clock=clock,
        app=app,
    )
