"""Wiring of the gateway process: HTTP API, channel adapters, projections."""

from __future__ import annotations

from functools import partial

import httpx
from fastapi import FastAPI

from schemas import Message, Topic
from schemas.channels import CloseChannelTrade, QueryChannelPayment, SubmitChannelPayment
from schemas.common import Channel
from schemas.ledger import JournalEntryPosted
from schemas.orders import OrderCancelled, OrderPlaced
from schemas.payments import PaymentPaidAfterClose
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.gateway import (
    admin_api,
    channels_api,
    events_api,
    orders,
    payments_api,
    projections,
    webhooks_api,
)
from services.gateway.channel_results import (
    close_channel_trade,
    query_channel_payment,
    submit_channel_payment,
)
from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.base import ChannelAdapter
from services.gateway.domain import STATUS_AFTER_EVENT
from services.gateway.payment_updates import PaymentUpdates
from services.gateway.problems import install_problem_handlers
from services.gateway.settings import GatewaySettings

# Every payment event the gateway folds into its payment views and timelines.
PROJECTED_PAYMENT_EVENTS: tuple[type[Message], ...] = (*STATUS_AFTER_EVENT, PaymentPaidAfterClose)


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
    for module in (payments_api, events_api, admin_api, webhooks_api, channels_api):
        app.include_router(module.router)

    async def wire(context: ServiceContext) -> None:
        timeout = httpx.Timeout(gateway_settings.channel_timeout_ms / 1000)
        channel_client = httpx.AsyncClient(timeout=timeout)
        notifier_client = httpx.AsyncClient(base_url=gateway_settings.notifier_url, timeout=timeout)
        context.on_stop.extend([channel_client.aclose, notifier_client.aclose])
        channels: dict[Channel, ChannelAdapter] = {
            Channel.ALIPAY: AlipayChannel(
                base_url=gateway_settings.psp_base_url,
                app_id=gateway_settings.alipay_app_id,
                secret=gateway_settings.alipay_secret.get_secret_value(),
                notify_url=f"{gateway_settings.base_url}/v1/channels/alipay/notify",
                http_client=channel_client,
                timeout_s=gateway_settings.channel_timeout_ms / 1000,
            )
        }
        payment_updates = PaymentUpdates(context.pool)
        await payment_updates.start()
        context.on_stop.append(payment_updates.stop)
        app.state.payment_updates = payment_updates
        app.state.channels = channels
        app.state.notifier_client = notifier_client
        context.consume(
            Topic.CHANNEL_COMMANDS,
            {
                SubmitChannelPayment: partial(
                    submit_channel_payment, channels=channels, clock=context.clock
                ),
                CloseChannelTrade: partial(close_channel_trade, channels=channels),
                QueryChannelPayment: partial(
                    query_channel_payment, channels=channels, clock=context.clock
                ),
            },
        )
        context.consume(
            Topic.PAYMENTS_EVENTS,
            dict.fromkeys(PROJECTED_PAYMENT_EVENTS, projections.project_payment_event),
        )
        context.consume(
            Topic.LEDGER_EVENTS, {JournalEntryPosted: projections.project_journal_entry}
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
