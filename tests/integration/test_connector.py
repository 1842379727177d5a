"""The channel connector against the real PSP simulator, broker and PostgreSQL: a call
whose outcome is unknown is never a failure, and a slow rail holds only its own lane.

The connector runs in-process behind a real HTTP listener (the simulator calls it back);
commands arrive on `channel.commands` as payment_center and the ledger send them, and
what the connector records is read from the gateway's event store.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker

from schemas import Command, Topic, encode, new_command, topic_name
from schemas.channels import SubmitChannelPayment, SubmitChannelPaymentPayload
from schemas.common import Channel
from schemas.payouts import BankPayoutRequest, SubmitBankPayout
from services.common.broker import build_broker
from services.common.settings import ServiceSettings
from services.gateway.circuit import CircuitState
from services.gateway.connector.app import create_app
from services.gateway.connector.settings import ConnectorSettings
from tests.support.polling import wait_until
from tests.support.psp import set_faults
from tests.support.servers import bind_local_socket, running_simulator, serving

pytestmark = pytest.mark.integration

CHANNEL_TIMEOUT_MS = 300
CIRCUIT_THRESHOLD = 5


@dataclass
class Connector:
    app: object
    database_url: str
    psp_url: str
    publisher: KafkaBroker
    topic: str

    async def send(self, command: Command) -> None:
        await self.publisher.publish(
            encode(command), topic=self.topic, key=command.aggregate_id.encode()
        )

    async def recorded(self, stream_id: str) -> list[str]:
        connection = await asyncpg.connect(self.database_url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT message_type FROM gateway.event_store WHERE stream_id = $1"
                " ORDER BY position",
                stream_id,
            )
            return [row["message_type"] for row in rows]
        finally:
            await connection.close()

    async def unresolved_alerts(self, subject_id: str) -> int:
        connection = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM gateway.event_store"
                    " WHERE message_type = 'ChannelOperationUnresolved'"
                    " AND body -> 'payload' ->> 'subject_id' = $1",
                    subject_id,
                )
            )
        finally:
            await connection.close()

    async def attempts(self, kind: str, subject_id: str) -> int:
        connection = await asyncpg.connect(self.database_url, timeout=10)
        try:
            found = await connection.fetchval(
                "SELECT attempts FROM gateway.channel_operations"
                " WHERE kind = $1 AND subject_id = $2",
                kind,
                subject_id,
            )
            return int(found or 0)
        finally:
            await connection.close()


@asynccontextmanager
async def running_connector(
    settings: ServiceSettings, *, payout_processing_ms: int = 20, retry_initial_ms: int = 50
) -> AsyncIterator[Connector]:
    listener = bind_local_socket()
    async with running_simulator(payout_processing_ms=payout_processing_ms) as psp_url:
        connector_settings = ConnectorSettings(
            **settings.model_dump(),
            psp_base_url=psp_url,
            public_base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
            channel_timeout_ms=CHANNEL_TIMEOUT_MS,
            channel_circuit_failure_threshold=CIRCUIT_THRESHOLD,
            channel_circuit_open_ms=60_000,
            operation_retry_initial_ms=retry_initial_ms,
            operation_retry_max_ms=max(200, retry_initial_ms),
            operation_unknown_alert_after_ms=1_000,
        )
        app = create_app(connector_settings)
        publisher = build_broker(settings, client_id="connector-test")
        async with serving(app, listener):
            await publisher.connect()
            try:
                yield Connector(
                    app=app,
                    database_url=settings.database_url,
                    psp_url=psp_url,
                    publisher=publisher,
                    topic=topic_name(Topic.CHANNEL_COMMANDS, settings.kafka_topic_prefix),
                )
            finally:
                await publisher.stop()


def submit_payment(channel: Channel, currency: str = "CNY") -> SubmitChannelPayment:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_command(
        SubmitChannelPayment,
        SubmitChannelPaymentPayload(
            channel=channel,
            order_id=f"order-{payment_id[-8:]}",
            amount_minor=1_250,
            currency=currency,
        ),
        aggregate_id=payment_id,
        merchant_id="mch_connector",
        producer="payment_center",
        issued_at=datetime.now(UTC),
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def test_a_card_answering_too_slowly_six_times_succeeds_once_it_answers(
    settings: ServiceSettings, http_client: httpx.AsyncClient
) -> None:
    async with running_connector(settings) as connector:
        # Every answer comes after the timeout, while the acquirer does the work.
        await set_faults(http_client, connector.psp_url, "card", latency_ms=3 * CHANNEL_TIMEOUT_MS)
        command = submit_payment(Channel.CARD, currency="USD")
        await connector.send(command)

        async def six_calls_made() -> bool:
            return await connector.attempts("submit_payment", command.aggregate_id) >= 6

        await wait_until(six_calls_made, timeout_s=30, what="six calls without an answer")
        # The calls opened the card circuit; it never refuses the payment's own retries.
        circuits = connector.app.state.circuits  # type: ignore[attr-defined]
        assert circuits.state("card") is CircuitState.OPEN
        assert await connector.recorded(command.aggregate_id) == []
        await set_faults(http_client, connector.psp_url, "card")

        async def answered() -> bool:
            return bool(await connector.recorded(command.aggregate_id))

        await wait_until(answered, timeout_s=30, what="the card's answer to be recorded")
        assert await connector.recorded(command.aggregate_id) == ["ChannelPaymentSucceeded"]
        # Six calls took longer than the alert setting: operations were told, once.
        assert await connector.unresolved_alerts(command.aggregate_id) == 1


async def test_a_new_payment_is_refused_while_its_rail_is_failing_but_others_go_through(
    settings: ServiceSettings, http_client: httpx.AsyncClient
) -> None:
    async with running_connector(settings) as connector:
        await set_faults(http_client, connector.psp_url, "wechat_pay", unavailable=True)
        opening = [submit_payment(Channel.WECHAT_PAY) for _ in range(CIRCUIT_THRESHOLD)]
        for command in opening:
            await connector.send(command)

        async def circuit_open() -> bool:
            circuits = connector.app.state.circuits  # type: ignore[attr-defined]
            return bool(circuits.state("wechat_pay") is CircuitState.OPEN)

        await wait_until(circuit_open, timeout_s=30, what="the wechat_pay circuit to open")
        late = submit_payment(Channel.WECHAT_PAY)
        other = submit_payment(Channel.ALIPAY)
        await connector.send(late)
        await connector.send(other)

        async def decided() -> bool:
            return bool(await connector.recorded(late.aggregate_id)) and bool(
                await connector.recorded(other.aggregate_id)
            )

        await wait_until(decided, timeout_s=30, what="the late and the other payment")
        # Never sent, so refused; the payments already sent stay open, never failed.
        assert await connector.recorded(late.aggregate_id) == ["ChannelPaymentRejected"]
        assert await connector.recorded(other.aggregate_id) == ["ChannelPaymentPrepared"]
        for command in opening:
            assert await connector.recorded(command.aggregate_id) == []


async def test_a_payout_the_bank_took_but_answered_429_then_503_is_paid_once(
    settings: ServiceSettings, http_client: httpx.AsyncClient
) -> None:
    # The bank pays a second after taking the payout, so the connector meets both
    # misleading answers before the bank's notification arrives.
    async with running_connector(settings, payout_processing_ms=1_000) as connector:
        await set_faults(http_client, connector.psp_url, "bank", answers_after_work=[429, 503])
        payout_id = f"po_{uuid.uuid4().hex}"
        command = new_command(
            SubmitBankPayout,
            BankPayoutRequest(payout_id=payout_id, amount_minor=9_900, currency="CNY"),
            aggregate_id=payout_id,
            merchant_id="mch_connector",
            producer="ledger",
            issued_at=datetime.now(UTC),
            correlation_id=payout_id,
            causation_id=None,
        )
        await connector.send(command)

        async def paid() -> bool:
            return "BankPayoutPaid" in await connector.recorded(payout_id)

        await wait_until(paid, timeout_s=30, what="the payout to be paid")
        # Sent three times (429, 503, then 202 for the transfer the bank already had),
        # and recorded paid once, by the bank's notification.
        assert await connector.attempts("submit_payout", payout_id) == 3
        assert await connector.recorded(payout_id) == ["BankPayoutPaid"]


async def test_the_banks_notification_settles_a_payout_whose_answer_was_lost(
    settings: ServiceSettings, http_client: httpx.AsyncClient
) -> None:
    # The bank takes the payout and answers 429; its "paid" notification comes long
    # before the connector would send the payout again: it is that payout's answer.
    async with running_connector(settings, retry_initial_ms=60_000) as connector:
        await set_faults(http_client, connector.psp_url, "bank", answers_after_work=[429])
        payout_id = f"po_{uuid.uuid4().hex}"
        await connector.send(
            new_command(
                SubmitBankPayout,
                BankPayoutRequest(payout_id=payout_id, amount_minor=4_400, currency="CNY"),
                aggregate_id=payout_id,
                merchant_id="mch_connector",
                producer="ledger",
                issued_at=datetime.now(UTC),
                correlation_id=payout_id,
                causation_id=None,
            )
        )

        async def paid() -> bool:
            return "BankPayoutPaid" in await connector.recorded(payout_id)

        await wait_until(paid, timeout_s=20, what="the notification to settle the payout")
        assert await connector.attempts("submit_payout", payout_id) == 1
        assert await connector.recorded(payout_id) == ["BankPayoutPaid"]
