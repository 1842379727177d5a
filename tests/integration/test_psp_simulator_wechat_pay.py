"""The WeChat Pay adapter against the real PSP simulator, both talking real HTTP on 127.0.0.1.

The simulator and a small notification receiver each run in a uvicorn server inside the
test's event loop, on ports the operating system picks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.channels import wechat_pay_protocol as protocol
from services.gateway.channels.base import (
    ChannelNotification,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    PreparedTrade,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from services.gateway.channels.wechat_pay import WeChatPayChannel
from tests.support import servers
from tests.support.psp import pay, random_payment_id, random_refund_id, set_faults
from tests.support.servers import (
    NotifyReceiver,
    comes_true_within,
    running_receiver,
    wait_until,
)

pytestmark = pytest.mark.integration

MCH_ID = "1900000109"
NOTIFICATION_TIMEOUT_S = 10.0
# How long a test watches for a notification that must not come. The fast retry schedule
# sends the first attempt at once, so a wrongly sent notification would arrive well within it.
NO_NOTIFICATION_WATCH_S = 0.5
REFUND_PROCESSING_MS = 20


def random_key() -> str:
    """A fresh 32-byte APIv3 key."""
    return uuid.uuid4().hex


def running_simulator(key: str, **overrides: Any) -> contextlib.AbstractAsyncContextManager[str]:
    """The simulator whose one WeChat Pay merchant is MCH_ID with APIv3 key `key`."""
    settings: dict[str, Any] = {
        "wechat_pay_mch_id": MCH_ID,
        "wechat_pay_api_v3_key": key,
        "refund_processing_ms": REFUND_PROCESSING_MS,
        **overrides,
    }
    return servers.running_simulator(**settings)


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]


class NotificationReceiver(NotifyReceiver):
    """Records every notification and answers from a script of statuses, then 204."""

    def __init__(self, statuses: Sequence[int] = ()) -> None:
        self.statuses = list(statuses)
        self.received: list[Received] = []

    async def receive(self, request: Request) -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.received.append(Received(body=await request.body(), headers=headers))
        index = len(self.received) - 1
        status = self.statuses[index] if index < len(self.statuses) else 204
        if status == 204:
            return Response(status_code=204)
        return Response('{"code":"FAIL","message":"later"}', status_code=status)


def wechat_pay(
    base_url: str, key: str, http_client: httpx.AsyncClient, **overrides: Any
) -> WeChatPayChannel:
    arguments: dict[str, Any] = {
        "base_url": base_url,
        "mch_id": MCH_ID,
        "api_v3_key": key,
        "notify_url": "http://127.0.0.1:9/notify",
        "http_client": http_client,
        "timeout_s": 5.0,
        **overrides,
    }
    return WeChatPayChannel(**arguments)


def read_all(channel: WeChatPayChannel, received: Sequence[Received]) -> list[ChannelNotification]:
    now = datetime.now(UTC)
    return [channel.read_notification(item.body, item.headers, now=now) for item in received]


def without_id(notification: ChannelNotification) -> ChannelNotification:
    return dataclasses.replace(notification, notification_id="")


async def prepared_and_paid(
    channel: WeChatPayChannel,
    http_client: httpx.AsyncClient,
    *,
    amount_minor: int = 1000,
    currency: str = "CNY",
) -> tuple[str, PreparedTrade]:
    payment_id = random_payment_id()
    prepared = await channel.prepare(
        payment_id=payment_id, amount_minor=amount_minor, currency=currency, description="Order"
    )
    paid = await pay(http_client, prepared.pay_url)
    assert paid.status_code == 200, paid.text
    return payment_id, prepared


async def test_a_paid_trade_is_notified_until_acknowledged_and_matches_the_query(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    payment_id = random_payment_id()
    receiver = NotificationReceiver(statuses=[500])
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)

        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=1234, currency="CNY", description="Order <42>"
        )
        unpaid = await channel.query(payment_id=payment_id)
        page = await http_client.get(prepared.pay_url, timeout=5.0)
        paid = await pay(http_client, prepared.pay_url)
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="a retried notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        queried = await channel.query(payment_id=payment_id)

    assert prepared.pay_url.startswith(f"{psp_url}/wx/pay/")
    assert prepared.qr_code is not None
    assert prepared.qr_code.startswith("weixin://wxpay/bizpayurl?pr=")
    assert unpaid is None
    assert page.status_code == 200
    assert "12.34 CNY" in page.text
    assert "Order &lt;42&gt;" in page.text
    assert paid.json() == {"trade_state": "SUCCESS", "transaction_id": prepared.channel_trade_id}

    first, second = read_all(channel, receiver.received[:2])
    assert first == second
    assert isinstance(first, VerifiedPaymentNotification)
    assert first.channel_trade_id == prepared.channel_trade_id
    assert first.payment_id == payment_id
    assert first.amount_minor == 1234
    assert abs((datetime.now(UTC) - first.paid_at).total_seconds()) < 60
    assert queried is not None
    assert queried.notification_id == f"query:{prepared.channel_trade_id}"
    assert without_id(queried) == without_id(first)
    assert all(
        item.headers["content-type"].startswith("application/json") for item in receiver.received
    )
    assert b"1234" not in receiver.received[0].body  # The resource travels encrypted.


async def test_paying_twice_is_a_no_op_and_an_unknown_trade_is_not_found(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    receiver = NotificationReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        _, prepared = await prepared_and_paid(channel, http_client)
        await wait_until(
            lambda: len(receiver.received) >= 1,
            what="the notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        again = await pay(http_client, prepared.pay_url)
        unknown = await pay(http_client, f"{psp_url}/wx/pay/unknown-token")
        unknown_page = await http_client.get(f"{psp_url}/wx/pay/unknown-token", timeout=5.0)
        notified_again = await comes_true_within(
            lambda: len(receiver.received) > 1, timeout_s=NO_NOTIFICATION_WATCH_S
        )

    assert again.json() == {"trade_state": "SUCCESS", "transaction_id": prepared.channel_trade_id}
    assert unknown.status_code == 404
    assert unknown_page.status_code == 404
    assert not notified_again


async def test_prepare_is_idempotent_and_another_amount_is_rejected(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    payment_id = random_payment_id()
    async with running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        first = await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description="Order"
        )
        second = await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description="Order"
        )
        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=payment_id, amount_minor=1001, currency="CNY", description="Order"
            )

    assert second == first
    assert raised.value.code == "invalid_request"


async def test_the_duplicate_fault_notifies_the_same_payment_twice(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    receiver = NotificationReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        await set_faults(http_client, psp_url, "wechat_pay", duplicate_notifications=True)
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        payment_id, prepared = await prepared_and_paid(channel, http_client, currency="JPY")
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="the duplicated notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )

    first, second = read_all(channel, receiver.received)
    assert first.notification_id != second.notification_id
    assert without_id(first) == without_id(second)
    assert isinstance(first, VerifiedPaymentNotification)
    assert (first.payment_id, first.channel_trade_id) == (payment_id, prepared.channel_trade_id)


async def test_the_out_of_order_fault_sends_an_earlier_state_that_is_ignored(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    receiver = NotificationReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        await set_faults(http_client, psp_url, "wechat_pay", out_of_order_notifications=True)
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        payment_id, _ = await prepared_and_paid(channel, http_client)
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="the out-of-order notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )

    success, earlier = read_all(channel, receiver.received)
    assert isinstance(success, VerifiedPaymentNotification)
    assert success.payment_id == payment_id
    assert earlier == IgnoredNotification(
        notification_id=earlier.notification_id, reason="earlier_trade_state"
    )
    assert earlier.notification_id != success.notification_id


async def test_the_lose_fault_sends_nothing_but_the_query_finds_the_payment(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    receiver = NotificationReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        await set_faults(http_client, psp_url, "wechat_pay", lose_notifications=True)
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        payment_id, prepared = await prepared_and_paid(channel, http_client)
        notified = await comes_true_within(
            lambda: len(receiver.received) > 0, timeout_s=NO_NOTIFICATION_WATCH_S
        )
        queried = await channel.query(payment_id=payment_id)

    assert not notified
    assert queried is not None
    assert queried.channel_trade_id == prepared.channel_trade_id


async def test_a_closed_trade_cannot_be_paid_and_is_never_notified(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    payment_id = random_payment_id()
    receiver = NotificationReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=1500, currency="CNY", description="Order 7"
        )

        await channel.close(payment_id=payment_id)
        paid = await pay(http_client, prepared.pay_url)
        notified = await comes_true_within(
            lambda: len(receiver.received) > 0, timeout_s=NO_NOTIFICATION_WATCH_S
        )
        await channel.close(payment_id=payment_id)
        await channel.close(payment_id=random_payment_id())
        queried = await channel.query(payment_id=payment_id)
        page = await http_client.get(prepared.pay_url, timeout=5.0)

    assert paid.status_code == 409
    assert not notified
    assert queried is None
    assert "CLOSED" in page.text
    assert "<button" not in page.text


async def test_closing_a_paid_trade_is_rejected_as_already_paid(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    async with running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        payment_id, _ = await prepared_and_paid(channel, http_client)

        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id=payment_id)
        queried = await channel.query(payment_id=payment_id)

    assert raised.value.code == "trade_already_paid"
    assert queried is not None


async def test_partial_refunds_up_to_the_paid_total_then_one_more_is_refused(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    receiver = NotificationReceiver()
    refund_ids = [random_refund_id() for _ in range(3)]
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        payment_id, _ = await prepared_and_paid(channel, http_client, amount_minor=1000)
        await wait_until(
            lambda: len(receiver.received) >= 1,
            what="the payment notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        accepted = [
            await channel.refund(
                payment_id=payment_id,
                refund_id=refund_id,
                amount_minor=amount_minor,
                currency="CNY",
                reason="returned",
            )
            for refund_id, amount_minor in zip(refund_ids, (300, 300, 400), strict=True)
        ]
        retried = await channel.refund(
            payment_id=payment_id,
            refund_id=refund_ids[0],
            amount_minor=300,
            currency="CNY",
            reason="returned",
        )
        with pytest.raises(ChannelRejected) as exceeded:
            await channel.refund(
                payment_id=payment_id,
                refund_id=random_refund_id(),
                amount_minor=1,
                currency="CNY",
                reason="",
            )
        with pytest.raises(ChannelRejected) as conflicting:
            await channel.refund(
                payment_id=payment_id,
                refund_id=refund_ids[0],
                amount_minor=200,
                currency="CNY",
                reason="",
            )
        await wait_until(
            lambda: len(receiver.received) >= 4,
            what="three refund notifications",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        queried_refunds = [
            await channel.query_refund(payment_id=payment_id, refund_id=refund_id)
            for refund_id in refund_ids
        ]
        queried_payment = await channel.query(payment_id=payment_id)

    assert retried == accepted[0]
    assert len({refund.channel_refund_id for refund in accepted}) == 3
    assert exceeded.value.code == "refund_exceeds_paid"
    assert conflicting.value.code == "invalid_request"
    notified = read_all(channel, receiver.received[1:])
    assert all(isinstance(item, VerifiedRefundNotification) for item in notified)
    by_refund_id = {
        item.refund_id: item for item in notified if isinstance(item, VerifiedRefundNotification)
    }
    assert sorted(by_refund_id) == sorted(refund_ids)
    for refund_id, refund, queried in zip(refund_ids, accepted, queried_refunds, strict=True):
        assert queried is not None
        assert queried.succeeded
        assert queried.failure_code is None
        assert queried.notification_id == f"query:{refund.channel_refund_id}"
        assert queried.channel_refund_id == refund.channel_refund_id
        assert without_id(queried) == without_id(by_refund_id[refund_id])
    assert [queried.amount_minor for queried in queried_refunds if queried] == [300, 300, 400]
    # A refunded trade was still paid.
    assert queried_payment is not None
    assert queried_payment.amount_minor == 1000


async def test_a_failed_refund_is_notified_as_failed_and_its_amount_is_refundable_again(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    receiver = NotificationReceiver()
    failing_refund_id = random_refund_id()
    async with running_receiver(receiver) as notify_url, running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client, notify_url=notify_url)
        payment_id, _ = await prepared_and_paid(channel, http_client, amount_minor=500)
        await set_faults(http_client, psp_url, "wechat_pay", fail_refunds=True)
        failing = await channel.refund(
            payment_id=payment_id,
            refund_id=failing_refund_id,
            amount_minor=500,
            currency="CNY",
            reason="",
        )
        await set_faults(http_client, psp_url, "wechat_pay")
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="the payment and refund notifications",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        queried = await channel.query_refund(payment_id=payment_id, refund_id=failing_refund_id)
        again = await channel.refund(
            payment_id=payment_id,
            refund_id=random_refund_id(),
            amount_minor=500,
            currency="CNY",
            reason="",
        )

    notified = read_all(channel, receiver.received[1:2])[0]
    assert isinstance(notified, VerifiedRefundNotification)
    assert not notified.succeeded
    assert notified.failure_code == "refund_abnormal"
    assert notified.channel_refund_id == failing.channel_refund_id
    assert notified.amount_minor == 500
    assert queried is not None
    assert without_id(queried) == without_id(notified)
    assert again.channel_refund_id != failing.channel_refund_id


async def test_refunds_of_unpaid_or_unknown_trades_are_refused(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    payment_id = random_payment_id()
    async with running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description=""
        )
        with pytest.raises(ChannelRejected) as unpaid:
            await channel.refund(
                payment_id=payment_id,
                refund_id=random_refund_id(),
                amount_minor=100,
                currency="CNY",
                reason="",
            )
        with pytest.raises(ChannelRejected) as unknown:
            await channel.refund(
                payment_id=random_payment_id(),
                refund_id=random_refund_id(),
                amount_minor=100,
                currency="CNY",
                reason="",
            )

    assert unpaid.value.code == "trade_not_paid"
    assert unknown.value.code == "trade_not_exist"


async def test_a_refund_query_is_none_while_processing_or_unknown(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    refund_id = random_refund_id()
    # Long enough that the query surely comes first; the test does not wait for the end.
    async with running_simulator(key, refund_processing_ms=60_000) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        payment_id, _ = await prepared_and_paid(channel, http_client)
        await channel.refund(
            payment_id=payment_id,
            refund_id=refund_id,
            amount_minor=100,
            currency="CNY",
            reason="",
        )
        processing = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)
        unknown = await channel.query_refund(payment_id=payment_id, refund_id=random_refund_id())

    assert processing is None
    assert unknown is None


async def test_the_unavailable_fault_makes_the_api_unavailable_but_not_the_payer_page(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    async with running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        payment_id = random_payment_id()
        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=100, currency="CNY", description=""
        )
        await set_faults(http_client, psp_url, "wechat_pay", unavailable=True)
        with pytest.raises(ChannelUnavailable):
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=100, currency="CNY", description=""
            )
        with pytest.raises(ChannelUnavailable):
            await channel.query(payment_id=payment_id)
        with pytest.raises(ChannelUnavailable):
            await channel.close(payment_id=payment_id)
        page = await http_client.get(prepared.pay_url, timeout=5.0)

    assert page.status_code == 200


async def test_the_decline_fault_rejects_new_trades_only(http_client: httpx.AsyncClient) -> None:
    key = random_key()
    existing_id = random_payment_id()
    async with running_simulator(key) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        existing = await channel.prepare(
            payment_id=existing_id, amount_minor=100, currency="CNY", description=""
        )
        await set_faults(http_client, psp_url, "wechat_pay", decline_payments=True)
        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=100, currency="CNY", description=""
            )
        again = await channel.prepare(
            payment_id=existing_id, amount_minor=100, currency="CNY", description=""
        )

    assert raised.value.code == "trade_error"
    assert again == existing


async def test_a_full_simulator_is_unavailable(http_client: httpx.AsyncClient) -> None:
    key = random_key()
    async with running_simulator(key, trade_count_max=1) as psp_url:
        channel = wechat_pay(psp_url, key, http_client)
        await channel.prepare(
            payment_id=random_payment_id(), amount_minor=100, currency="CNY", description=""
        )
        with pytest.raises(ChannelUnavailable):
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=100, currency="CNY", description=""
            )


async def test_requests_that_fail_authentication_get_an_unsigned_sign_error(
    http_client: httpx.AsyncClient,
) -> None:
    key = random_key()
    payment_id = random_payment_id()
    async with running_simulator(key) as psp_url:
        forger = wechat_pay(psp_url, random_key(), http_client)
        with pytest.raises(ChannelUnavailable):
            await forger.prepare(
                payment_id=payment_id, amount_minor=100, currency="CNY", description=""
            )
        path = protocol.trade_path(payment_id) + f"?mchid={MCH_ID}"
        stale_timestamp = str(int(datetime.now(UTC).timestamp()) - 301)
        stale_signature = protocol.sign(
            protocol.request_message("GET", path, stale_timestamp, "n1", b""), key
        )
        stale = await http_client.get(
            f"{psp_url}{path}",
            headers={
                "authorization": protocol.authorization(
                    MCH_ID, "n1", stale_timestamp, stale_signature
                )
            },
            timeout=5.0,
        )
        unsigned = await http_client.get(f"{psp_url}{path}", timeout=5.0)
        # The genuine merchant still sees no trade: the forged prepare created nothing.
        queried = await wechat_pay(psp_url, key, http_client).query(payment_id=payment_id)

    for response in (stale, unsigned):
        assert response.status_code == 401
        assert response.json()["code"] == "SIGN_ERROR"
        assert protocol.HEADER_SIGNATURE not in response.headers
    assert queried is None


async def test_answers_are_signed_with_the_shared_key(http_client: httpx.AsyncClient) -> None:
    key = random_key()
    payment_id = random_payment_id()
    async with running_simulator(key) as psp_url:
        await wechat_pay(psp_url, key, http_client).prepare(
            payment_id=payment_id, amount_minor=100, currency="CNY", description=""
        )
        path = protocol.trade_path(payment_id) + f"?mchid={MCH_ID}"
        timestamp = str(int(datetime.now(UTC).timestamp()))
        signature = protocol.sign(protocol.request_message("GET", path, timestamp, "n2", b""), key)
        response = await http_client.get(
            f"{psp_url}{path}",
            headers={"authorization": protocol.authorization(MCH_ID, "n2", timestamp, signature)},
            timeout=5.0,
        )

    assert response.status_code == 200
    message = protocol.answer_message(
        response.headers[protocol.HEADER_TIMESTAMP],
        response.headers[protocol.HEADER_NONCE],
        response.content,
    )
    assert protocol.verify(message, response.headers[protocol.HEADER_SIGNATURE], key)
    assert response.json()["trade_state"] == "NOTPAY"
    assert response.json()["amount"] == {"total": 100, "currency": "CNY"}
