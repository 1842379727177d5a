"""Wiring of the channel connector: the gateway's process that talks to the channels and
the bank rail, apart from the public API.

- It consumes `channel.commands` as consumer group `payrail.connector` and queues each
  command as an operation (services/gateway/connector/operations.py).
- One lane per rail calls the rail for those operations, outside any transaction, and
  records the answers (services/gateway/connector/lanes.py).
- It serves the channels' and the bank's signed callbacks (callbacks.py).

It shares the gateway's schema (event store, outbox, the trades and payouts on record),
so what it records reaches payment_center and the ledger through the same outbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI

from schemas import Message, Topic
from schemas.common import Channel
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.bank import BankRailClient
from services.gateway.channels.base import ChannelAdapter
from services.gateway.channels.card import CardChannel
from services.gateway.channels.wechat_pay import WeChatPayChannel
from services.gateway.circuit import ChannelCircuits
from services.gateway.connector import callbacks
from services.gateway.connector.lanes import Lane, circuit_health_writer
from services.gateway.connector.operations import (
    BANK_RAIL,
    OPERATION_KINDS,
    Rails,
    enqueue_operation,
    rail_of,
)
from services.gateway.connector.settings import ConnectorSettings

SERVICE_NAME = "connector"
SCHEMA = "gateway"


def build_channels(
    settings: ConnectorSettings, http_client: httpx.AsyncClient
) -> dict[Channel, ChannelAdapter]:
    timeout_s = settings.channel_timeout_ms / 1000
    return {
        Channel.ALIPAY: AlipayChannel(
            base_url=settings.psp_base_url,
            app_id=settings.alipay_app_id,
            secret=settings.alipay_secret.get_secret_value(),
            notify_url=f"{settings.base_url}/v1/channels/alipay/notify",
            http_client=http_client,
            timeout_s=timeout_s,
        ),
        Channel.WECHAT_PAY: WeChatPayChannel(
            base_url=settings.psp_base_url,
            mch_id=settings.wechat_pay_mch_id,
            api_v3_key=settings.wechat_pay_api_v3_key.get_secret_value(),
            notify_url=f"{settings.base_url}/v1/channels/wechat_pay/notify",
            http_client=http_client,
            timeout_s=timeout_s,
        ),
        Channel.CARD: CardChannel(
            base_url=settings.psp_base_url,
            merchant_account=settings.card_merchant_account,
            api_key=settings.card_api_key.get_secret_value(),
            hmac_key=settings.card_hmac_key.get_secret_value(),
            notify_url=f"{settings.base_url}/v1/channels/card/notify",
            http_client=http_client,
            timeout_s=timeout_s,
        ),
    }


def build_bank_rail(settings: ConnectorSettings, http_client: httpx.AsyncClient) -> BankRailClient:
    return BankRailClient(
        base_url=settings.psp_base_url,
        api_key=settings.bank_api_key.get_secret_value(),
        hmac_key=settings.bank_hmac_key.get_secret_value(),
        notify_url=f"{settings.base_url}/v1/bank/notify",
        http_client=http_client,
        timeout_s=settings.channel_timeout_ms / 1000,
    )


def create_app(settings: ConnectorSettings | None = None, clock: Clock | None = None) -> FastAPI:
    connector_settings = settings or ConnectorSettings()
    app = FastAPI(title="payrail connector")
    app.include_router(callbacks.router)

    async def wire(context: ServiceContext) -> None:
        http_client = httpx.AsyncClient(
            timeout=httpx.Timeout(connector_settings.channel_timeout_ms / 1000),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        context.on_stop.append(http_client.aclose)
        channels = build_channels(connector_settings, http_client)
        bank_rail = build_bank_rail(connector_settings, http_client)
        app.state.channels = channels
        app.state.bank_rail = bank_rail
        circuits = ChannelCircuits(
            context.clock,
            failure_threshold=connector_settings.channel_circuit_failure_threshold,
            open_ms=connector_settings.channel_circuit_open_ms,
        )
        app.state.circuits = circuits
        rails = Rails(channels=channels, bank=bank_rail, clock=context.clock)
        publish_health = circuit_health_writer(context.pool, circuits, context.clock.now)
        lanes = {
            rail: Lane(
                rail=rail,
                pool=context.pool,
                rails=rails,
                circuits=circuits,
                settings=connector_settings.lane_settings(),
                on_recorded=context.relay.wake,
                on_circuit_change=publish_health,
            )
            for rail in (*(channel.value for channel in Channel), BANK_RAIL)
        }
        app.state.lanes = lanes
        context.consume(
            Topic.CHANNEL_COMMANDS,
            dict.fromkeys(
                OPERATION_KINDS,
                partial(enqueue_operation, clock=context.clock, topic=Topic.CHANNEL_COMMANDS),
            ),
        )
        context.after_batch.append(partial(_wake_lanes, lanes))
        for rail, lane in lanes.items():
            context.background.append(_named(f"lane_{rail}", lane.run))

    return create_service_app(
        SERVICE_NAME,
        connector_settings,
        migration_packages=["services.gateway.migrations"],
        wiring=wire,
        clock=clock,
        app=app,
        schema=SCHEMA,
    )


def _wake_lanes(lanes: Mapping[str, Lane], applied: Sequence[Message]) -> None:
    """Wake the lanes of the rails the consumer just queued work for."""
    for message in applied:
        lane = lanes.get(rail_of(message))  # type: ignore[arg-type]
        if lane is not None:
            lane.wake()


def _named(
    name: str, work: Callable[[], Awaitable[None]]
) -> Callable[[], Coroutine[Any, Any, None]]:
    """`work` under `name`, the name the supervisor reports a loop by."""

    async def loop() -> None:
        await work()

    loop.__name__ = name
    return loop
