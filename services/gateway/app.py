"""Wiring of the gateway process: HTTP API, channel adapters, projections."""

from __future__ import annotations

from functools import partial

import httpx
from fastapi import FastAPI

from schemas import Message, Topic
from schemas.channels import CloseChannelTrade, QueryChannelPayment, SubmitChannelPayment
from schemas.common import Channel
from schemas.ledger import JournalEntryPosted, SettlementCreated
from schemas.orders import OrderCancelled, OrderPlaced
from schemas.payments import PaymentPaidAfterClose
from schemas.payouts import PayoutCreated, PayoutFailed, PayoutPaid, SubmitBankPayout
from schemas.refunds import (
    QueryChannelRefund,
    RefundFailed,
    RefundRefused,
    RefundRequested,
    RefundSucceeded,
    SubmitChannelRefund,
)
from schemas.webhooks import WebhookEndpointDisabled
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.gateway import (
    adjustments_api,
    admin_api,
    balance_transactions_api,
    channels_api,
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
from services.gateway.channel_results import (
    ChannelCalls,
    close_channel_trade,
    query_channel_payment,
    query_channel_refund,
    submit_channel_payment,
    submit_channel_refund,
)
from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.bank import BankRailClient
from services.gateway.channels.base import ChannelAdapter
from services.gateway.channels.card import CardChannel
from services.gateway.channels.wechat_pay import WeChatPayChannel
from services.gateway.circuit import ChannelCircuits
from services.gateway.domain import STATUS_AFTER_EVENT
from services.gateway.payment_updates import PaymentUpdates
from services.gateway.problems import install_problem_handlers
from services.gateway.settings import GatewaySettings

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
        channels_api,
    ):
        app.include_router(module.router)
    app.include_router(settlements_api.admin)
    app.include_router(payouts_api.router)
    app.include_router(payouts_api.admin)
    app.include_router(adjustments_api.admin)
    app.include_router(risk_api.admin)
    app.include_router(payouts_api.rail_callbacks)
    app.include_router(reports_api.router)
    app.include_router(balance_transactions_api.router)

    async def wire(context: ServiceContext) -> None:
        timeout = httpx.Timeout(gateway_settings.channel_timeout_ms / 1000)
        channel_client = httpx.AsyncClient(timeout=timeout)
        notifier_client = httpx.AsyncClient(base_url=gateway_settings.notifier_url, timeout=timeout)
        ledger_client = httpx.AsyncClient(base_url=gateway_settings.ledger_url, timeout=timeout)
        risk_client = httpx.AsyncClient(base_url=gateway_settings.risk_url, timeout=timeout)
        context.on_stop.append(risk_client.aclose)
        app.state.risk_client = risk_client
        context.on_stop.extend(
            [channel_client.aclose, notifier_client.aclose, ledger_client.aclose]
        )
        channels: dict[Channel, ChannelAdapter] = {
            Channel.ALIPAY: AlipayChannel(
                base_url=gateway_settings.psp_base_url,
                app_id=gateway_settings.alipay_app_id,
                secret=gateway_settings.alipay_secret.get_secret_value(),
                notify_url=f"{gateway_settings.base_url}/v1/channels/alipay/notify",
                http_client=channel_client,
                timeout_s=gateway_settings.channel_timeout_ms / 1000,
            ),
            Channel.WECHAT_PAY: WeChatPayChannel(
                base_url=gateway_settings.psp_base_url,
                mch_id=gateway_settings.wechat_pay_mch_id,
                api_v3_key=gateway_settings.wechat_pay_api_v3_key.get_secret_value(),
                notify_url=f"{gateway_settings.base_url}/v1/channels/wechat_pay/notify",
                http_client=channel_client,
                timeout_s=gateway_settings.channel_timeout_ms / 1000,
            ),
            Channel.CARD: CardChannel(
                base_url=gateway_settings.psp_base_url,
                merchant_account=gateway_settings.card_merchant_account,
                api_key=gateway_settings.card_api_key.get_secret_value(),
                hmac_key=gateway_settings.card_hmac_key.get_secret_value(),
                notify_url=f"{gateway_settings.base_url}/v1/channels/card/notify",
                http_client=channel_client,
                timeout_s=gateway_settings.channel_timeout_ms / 1000,
            ),
        }
        bank_rail = BankRailClient(
            base_url=gateway_settings.psp_base_url,
            api_key=gateway_settings.bank_api_key.get_secret_value(),
            hmac_key=gateway_settings.bank_hmac_key.get_secret_value(),
            notify_url=f"{gateway_settings.base_url}/v1/bank/notify",
            http_client=channel_client,
            timeout_s=gateway_settings.channel_timeout_ms / 1000,
        )
        app.state.bank_rail = bank_rail
        circuits = ChannelCircuits(
            context.clock,
            failure_threshold=gateway_settings.channel_circuit_failure_threshold,
            open_ms=gateway_settings.channel_circuit_open_ms,
        )
        app.state.circuits = circuits
        payment_updates = PaymentUpdates(context.pool)
        await payment_updates.start()
        context.on_stop.append(payment_updates.stop)
        context.after_batch.append(payment_updates.after_batch)
        app.state.payment_updates = payment_updates
        app.state.channels = channels
        app.state.notifier_client = notifier_client
        app.state.ledger_client = ledger_client
        calls = ChannelCalls(channels=channels, circuits=circuits, clock=context.clock)
        context.consume(
            Topic.CHANNEL_COMMANDS,
            {
                SubmitChannelPayment: partial(submit_channel_payment, calls=calls),
                CloseChannelTrade: partial(close_channel_trade, calls=calls),
                QueryChannelPayment: partial(query_channel_payment, calls=calls),
                SubmitChannelRefund: partial(submit_channel_refund, calls=calls),
                QueryChannelRefund: partial(query_channel_refund, calls=calls),
                SubmitBankPayout: partial(
                    payouts.submit_bank_payout, rail=bank_rail, clock=context.clock
                ),
            },
        )
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
