"""The Alipay adapter against the real PSP simulator, both talking real HTTP on 127.0.0.1.

The simulator and a small notification receiver each run in a uvicorn server inside the
test's event loop, on ports the operating system picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from services.gateway.channels import alipay_protocol as protocol
from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.base import (
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    RefundAccepted,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from tests.support import servers
from tests.support.psp import pay, random_payment_id, random_refund_id, set_faults
from tests.support.servers import (
    NotifyReceiver,
    bind_local_socket,
    comes_true_within,
    running_receiver,
    wait_until,
)

pytestmark = pytest.mark.integration

APP_ID = "payrail_platform"
NOTIFICATION_TIMEOUT_S = 10.0
# How long a test watches for a notification that must not come. The fast schedule sends
# the first attempt at once, so a wrongly sent notification would arrive well within it.
NO_NOTIFICATION_WATCH_S = 0.5
# Refunds finish quickly, so tests wait milliseconds for their results.
FAST_REFUND_PROCESSING_MS = 50
# Long enough for a test to query a refund before it finishes.
SLOW_REFUND_PROCESSING_MS = 400
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


def random_secret() -> str:
    return f"secret-{uuid.uuid4().hex}"


def running_simulator(secret: str, **overrides: Any) -> contextlib.AbstractAsyncContextManager[str]:
    """The simulator whose one Alipay app is APP_ID with `secret`."""
    return servers.running_simulator(alipay_app_id=APP_ID, alipay_secret=secret, **overrides)


class NotificationReceiver(NotifyReceiver):
    """Records every notification and answers from a script, then `success` for ever."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.received: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []

    async def receive(self, request: Request) -> PlainTextResponse:
        raw_body = await request.body()
        body = raw_body.decode("utf-8")
        self.bodies.append(raw_body)
        self.content_types.append(request.headers.get("content-type", ""))
        self.received.append(dict(parse_qsl(body, keep_blank_values=True, max_num_fields=64)))
        index = len(self.received) - 1
        return PlainTextResponse(self.answers[index] if index < len(self.answers) else "success")

    def bodies_of(self, notify_type: str) -> list[bytes]:
        """The raw bodies received so far whose notify_type is `notify_type`, in order."""
        return [
            body
            for body, fields in zip(self.bodies, self.received, strict=True)
            if fields.get("notify_type") == notify_type
        ]


def alipay(
    base_url: str, secret: str, http_client: httpx.AsyncClient, **overrides: Any
) -> AlipayChannel:
    arguments: dict[str, Any] = {
        "base_url": base_url,
        "app_id": APP_ID,
        "secret": secret,
        "notify_url": "http://127.0.0.1:9/notify",
        "http_client": http_client,
        "timeout_s": 5.0,
        **overrides,
    }
    return AlipayChannel(**arguments)


async def test_a_paid_trade_is_notified_and_retried_until_acknowledged(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    receiver = NotificationReceiver(answers=["fail", "success"])
    async with running_receiver(receiver) as notify_url, running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)

        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=1234, currency="CNY", description="Order 42"
        )
        page = await http_client.get(prepared.pay_url, timeout=5.0)
        paid = await pay(http_client, prepared.pay_url)
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="a retried notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        query = await http_client.get(
            f"{psp_url}/alipay/v1/trades/{payment_id}", params={"app_id": APP_ID}, timeout=5.0
        )

    assert prepared.pay_url == f"{psp_url}/pay/{prepared.channel_trade_id}"
    assert prepared.qr_code == f"{psp_url}/qr/{prepared.channel_trade_id}"
    assert page.status_code == 200
    assert "12.34 CNY" in page.text
    assert "Order 42" in page.text
    assert paid.status_code == 200
    assert paid.json() == {"trade_no": prepared.channel_trade_id, "trade_status": "TRADE_SUCCESS"}

    first, second = receiver.received[:2]
    assert first["notify_id"] == second["notify_id"]
    assert all(
        kind.startswith("application/x-www-form-urlencoded") for kind in receiver.content_types
    )
    now = datetime.now(UTC)
    verified = [channel.verify_notification(fields, now=now) for fields in (first, second)]
    assert verified[0] == verified[1]
    assert verified[1] == VerifiedPaymentNotification(
        notification_id=first["notify_id"],
        channel_trade_id=prepared.channel_trade_id,
        payment_id=payment_id,
        amount_minor=1234,
        currency="CNY",
        paid_at=verified[1].paid_at,
    )
    assert verified[1].paid_at.tzinfo is not None
    assert abs((now - verified[1].paid_at).total_seconds()) < 60

    query_fields = query.json()
    assert protocol.verify(query_fields, secret)
    assert query_fields["trade_status"] == "TRADE_SUCCESS"
    assert query_fields["trade_no"] == prepared.channel_trade_id
    assert query_fields["total_amount_minor"] == "1234"


async def test_paying_twice_is_a_no_op(http_client: httpx.AsyncClient) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=["success"])
    async with running_receiver(receiver) as notify_url, running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        prepared = await channel.prepare(
            payment_id=random_payment_id(), amount_minor=500, currency="USD", description=""
        )

        first = await pay(http_client, prepared.pay_url)
        await wait_until(
            lambda: len(receiver.received) >= 1,
            what="the notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        second = await pay(http_client, prepared.pay_url)

    assert first.json() == second.json()
    assert second.json()["trade_status"] == "TRADE_SUCCESS"
    assert len({fields["notify_id"] for fields in receiver.received}) == 1


async def test_precreate_is_idempotent_for_the_same_payment(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client)

        first = await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description="Order"
        )
        second = await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description="Order"
        )

    assert second == first


async def test_precreate_with_another_amount_for_the_same_payment_conflicts(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client)
        await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description="Order"
        )

        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=payment_id, amount_minor=1001, currency="CNY", description="Order"
            )

    assert raised.value.code == "trade_conflict"


async def test_precreate_with_another_currency_for_the_same_payment_conflicts(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client)
        await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description="Order"
        )

        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=payment_id, amount_minor=1000, currency="HKD", description="Order"
            )

    assert raised.value.code == "trade_conflict"


async def test_precreate_with_a_bad_signature_is_rejected(http_client: httpx.AsyncClient) -> None:
    async with running_simulator(random_secret()) as psp_url:
        channel = alipay(psp_url, "not-the-shared-secret", http_client)

        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=1000, currency="CNY", description=""
            )

    assert raised.value.code == "invalid_signature"


async def test_precreate_with_an_unknown_app_id_is_rejected(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, app_id="unknown_app")

        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=1000, currency="CNY", description=""
            )

    assert raised.value.code == "invalid_app_id"


async def test_a_refusal_of_a_badly_signed_request_is_left_unsigned(
    http_client: httpx.AsyncClient,
) -> None:
    # The caller evidently lacks the secret, so signing the refusal with it would prove
    # nothing to the caller and would hand a forger a signed sample.
    async with running_simulator(random_secret()) as psp_url:
        request = protocol.signed({"app_id": APP_ID}, random_secret())
        response = await http_client.post(
            f"{psp_url}{protocol.PRECREATE_PATH}", json=request, timeout=5.0
        )

    assert response.status_code == 200
    assert response.json()["code"] == "40004"
    assert response.json()["sub_code"] == "INVALID_SIGNATURE"
    assert "sign" not in response.json()


async def test_shutdown_cancels_notifications_still_being_retried(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=["fail"] * 3)
    # The second attempt would come a minute later: shutdown must not wait for it.
    simulator = running_simulator(secret, notify_retry_schedule_ms=[0, 60_000])
    loop = asyncio.get_running_loop()
    async with running_receiver(receiver) as notify_url:
        async with simulator as psp_url:
            channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
            prepared = await channel.prepare(
                payment_id=random_payment_id(), amount_minor=700, currency="EUR", description=""
            )
            await pay(http_client, prepared.pay_url)
            await wait_until(
                lambda: len(receiver.received) >= 1,
                what="the first notification attempt",
                timeout_s=NOTIFICATION_TIMEOUT_S,
            )
            shutdown_started_s = loop.time()
        shutdown_duration_s = loop.time() - shutdown_started_s

    assert len(receiver.received) == 1
    assert shutdown_duration_s < 5.0


async def test_an_unreachable_channel_is_unavailable(http_client: httpx.AsyncClient) -> None:
    # A port that was bound and released a moment ago refuses connections.
    listener = bind_local_socket()
    port = listener.getsockname()[1]
    listener.close()
    channel = alipay(f"http://127.0.0.1:{port}", random_secret(), http_client, timeout_s=2.0)

    with pytest.raises(ChannelUnavailable):
        await channel.prepare(
            payment_id=random_payment_id(), amount_minor=1000, currency="CNY", description=""
        )


async def test_paying_an_unknown_trade_is_not_found(http_client: httpx.AsyncClient) -> None:
    async with running_simulator(random_secret()) as psp_url:
        response = await pay(http_client, f"{psp_url}/pay/20250101{'0' * 20}")

    assert response.status_code == 404


async def test_fault_injection_drops_first_attempts_and_duplicates_notifications(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    receiver = NotificationReceiver(answers=[])
    simulator = running_simulator(secret, duplicate_notify=True, notify_drop_first_count=1)
    async with running_receiver(receiver) as notify_url, simulator as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=99, currency="JPY", description="Duplicate"
        )
        await pay(http_client, prepared.pay_url)
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="the duplicated notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )

    now = datetime.now(UTC)
    verified = [channel.verify_notification(fields, now=now) for fields in receiver.received]
    assert len(verified) == 2
    assert verified[0].notification_id != verified[1].notification_id
    assert {notification.payment_id for notification in verified} == {payment_id}
    assert {notification.amount_minor for notification in verified} == {99}


async def query_trade(
    http_client: httpx.AsyncClient, psp_url: str, payment_id: str
) -> dict[str, str]:
    response = await http_client.get(
        f"{psp_url}{protocol.TRADE_QUERY_PATH_PREFIX}{payment_id}",
        params={"app_id": APP_ID},
        timeout=5.0,
    )
    fields: dict[str, str] = response.json()
    return fields


async def test_a_closed_trade_cannot_be_paid_and_is_never_notified(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    receiver = NotificationReceiver(answers=[])
    async with running_receiver(receiver) as notify_url, running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=1500, currency="CNY", description="Order 7"
        )

        await channel.close(payment_id=payment_id)
        query_fields = await query_trade(http_client, psp_url, payment_id)
        paid = await pay(http_client, prepared.pay_url)
        notified = await comes_true_within(
            lambda: len(receiver.received) > 0, timeout_s=NO_NOTIFICATION_WATCH_S
        )
        await channel.close(payment_id=payment_id)
        page = await http_client.get(prepared.pay_url, timeout=5.0)

    assert protocol.verify(query_fields, secret)
    assert query_fields["trade_status"] == "TRADE_CLOSED"
    assert query_fields["trade_no"] == prepared.channel_trade_id
    assert "gmt_payment" not in query_fields
    assert paid.status_code == 409
    assert not notified
    assert receiver.received == []
    assert "TRADE_CLOSED" in page.text
    assert "<button" not in page.text


async def test_closing_a_paid_trade_is_rejected_as_already_paid(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    receiver = NotificationReceiver(answers=["success"])
    async with running_receiver(receiver) as notify_url, running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=800, currency="USD", description=""
        )
        paid = await pay(http_client, prepared.pay_url)

        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id=payment_id)
        query_fields = await query_trade(http_client, psp_url, payment_id)

    assert paid.status_code == 200
    assert raised.value.code == "trade_already_paid"
    assert "paid" in raised.value.message
    assert query_fields["trade_status"] == "TRADE_SUCCESS"


async def test_closing_a_trade_that_never_existed_succeeds(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client)

        await channel.close(payment_id=payment_id)
        query_fields = await query_trade(http_client, psp_url, payment_id)

    assert query_fields["sub_code"] == "TRADE_NOT_EXIST"


async def test_close_with_a_bad_signature_is_rejected(http_client: httpx.AsyncClient) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    async with running_simulator(secret) as psp_url:
        await alipay(psp_url, secret, http_client).prepare(
            payment_id=payment_id, amount_minor=1000, currency="CNY", description=""
        )
        forger = alipay(psp_url, "not-the-shared-secret", http_client)

        with pytest.raises(ChannelRejected) as raised:
            await forger.close(payment_id=payment_id)
        query_fields = await query_trade(http_client, psp_url, payment_id)

    assert raised.value.code == "invalid_signature"
    assert query_fields["trade_status"] == "WAIT_BUYER_PAY"


async def test_close_with_an_unknown_app_id_is_rejected(http_client: httpx.AsyncClient) -> None:
    secret = random_secret()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, app_id="unknown_app")

        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id=random_payment_id())

    assert raised.value.code == "invalid_app_id"


async def test_close_with_a_malformed_out_trade_no_is_rejected(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    async with running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client)

        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id="not allowed/here")

    assert raised.value.code == "invalid_parameter"


def refund_simulator(
    secret: str, refund_processing_ms: int = FAST_REFUND_PROCESSING_MS
) -> contextlib.AbstractAsyncContextManager[str]:
    return running_simulator(secret, refund_processing_ms=refund_processing_ms)


async def paid_payment(
    channel: AlipayChannel,
    http_client: httpx.AsyncClient,
    amount_minor: int,
    description: str = "Refundable order",
) -> str:
    """Create a trade for a new payment and pay it; return the payment id."""
    payment_id = random_payment_id()
    prepared = await channel.prepare(
        payment_id=payment_id, amount_minor=amount_minor, currency="CNY", description=description
    )
    paid = await pay(http_client, prepared.pay_url)
    assert paid.status_code == 200
    return payment_id


def read_all(channel: AlipayChannel, bodies: list[bytes]) -> list[object]:
    now = datetime.now(UTC)
    return [channel.read_notification(body, FORM_HEADERS, now=now) for body in bodies]


async def test_partial_refunds_up_to_the_paid_amount_then_one_more_is_refused(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=[])
    async with running_receiver(receiver) as notify_url, refund_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        payment_id = await paid_payment(channel, http_client, 1000)
        first_id, second_id = random_refund_id(), random_refund_id()

        first = await channel.refund(
            payment_id=payment_id, refund_id=first_id, amount_minor=600, currency="CNY", reason=""
        )
        second = await channel.refund(
            payment_id=payment_id,
            refund_id=second_id,
            amount_minor=400,
            currency="CNY",
            reason="rest",
        )
        with pytest.raises(ChannelRejected) as raised:
            await channel.refund(
                payment_id=payment_id,
                refund_id=random_refund_id(),
                amount_minor=1,
                currency="CNY",
                reason="one too many",
            )
        await wait_until(
            lambda: len(receiver.bodies_of("refund_status_sync")) >= 2,
            what="both refund notifications",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        query_fields = await query_trade(http_client, psp_url, payment_id)

    assert first.channel_refund_id != second.channel_refund_id
    assert raised.value.code == "refund_exceeds_paid"
    refunds = read_all(channel, receiver.bodies_of("refund_status_sync"))
    assert all(isinstance(refund, VerifiedRefundNotification) for refund in refunds)
    by_refund_id = {
        refund.refund_id: refund
        for refund in refunds
        if isinstance(refund, VerifiedRefundNotification)
    }
    assert {(key, value.amount_minor, value.succeeded) for key, value in by_refund_id.items()} == {
        (first_id, 600, True),
        (second_id, 400, True),
    }
    assert by_refund_id[first_id].channel_refund_id == first.channel_refund_id
    # Fully refunded, the trade still proves that the payer paid.
    assert query_fields["trade_status"] == "TRADE_SUCCESS"


async def test_a_refund_retried_with_the_same_id_is_the_same_refund(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=[])
    async with running_receiver(receiver) as notify_url, refund_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        payment_id = await paid_payment(channel, http_client, 500)
        refund_id = random_refund_id()

        attempts = [
            await channel.refund(
                payment_id=payment_id,
                refund_id=refund_id,
                amount_minor=500,
                currency="CNY",
                reason="retry",
            )
            for _ in range(2)
        ]
        await wait_until(
            lambda: len(receiver.bodies_of("refund_status_sync")) >= 1,
            what="the refund notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        after_completion = await channel.refund(
            payment_id=payment_id, refund_id=refund_id, amount_minor=500, currency="CNY", reason=""
        )
        with pytest.raises(ChannelRejected) as raised:
            await channel.refund(
                payment_id=payment_id,
                refund_id=refund_id,
                amount_minor=499,
                currency="CNY",
                reason="",
            )
        notified_again = await comes_true_within(
            lambda: len(receiver.bodies_of("refund_status_sync")) > 1,
            timeout_s=NO_NOTIFICATION_WATCH_S,
        )

    assert attempts[0] == attempts[1] == after_completion
    assert isinstance(attempts[0], RefundAccepted)
    assert raised.value.code == "refund_conflict"
    assert not notified_again


async def test_refunding_a_trade_that_is_not_paid_is_refused(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    payment_id = random_payment_id()
    async with refund_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client)
        await channel.prepare(
            payment_id=payment_id, amount_minor=800, currency="CNY", description="Unpaid"
        )
        rejections: list[ChannelRejected] = []
        for target in (payment_id, random_payment_id()):
            with pytest.raises(ChannelRejected) as raised:
                await channel.refund(
                    payment_id=target,
                    refund_id=random_refund_id(),
                    amount_minor=100,
                    currency="CNY",
                    reason="",
                )
            rejections.append(raised.value)

    assert [rejection.code for rejection in rejections] == ["trade_not_paid", "trade_not_paid"]
    assert "WAIT_BUYER_PAY" in rejections[0].message


async def test_a_refund_is_queried_before_and_after_it_finishes(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    # The payment's notification is acknowledged, the refund's first attempt is not.
    receiver = NotificationReceiver(answers=["success", "fail"])
    simulator = refund_simulator(secret, refund_processing_ms=SLOW_REFUND_PROCESSING_MS)
    async with running_receiver(receiver) as notify_url, simulator as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        payment_id = await paid_payment(channel, http_client, 1200)
        refund_id = random_refund_id()
        unknown = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)

        accepted = await channel.refund(
            payment_id=payment_id, refund_id=refund_id, amount_minor=700, currency="CNY", reason=""
        )
        processing = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)
        await wait_until(
            lambda: len(receiver.bodies_of("refund_status_sync")) >= 2,
            what="the refund notification, retried",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        finished = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)
        of_another_payment = await channel.query_refund(
            payment_id=random_payment_id(), refund_id=refund_id
        )

    assert unknown is None
    assert processing is None
    assert of_another_payment is None
    first, second = read_all(channel, receiver.bodies_of("refund_status_sync"))[:2]
    assert first == second
    assert isinstance(first, VerifiedRefundNotification)
    assert first.refund_id == refund_id
    assert first.payment_id == payment_id
    assert first.channel_refund_id == accepted.channel_refund_id
    assert (first.amount_minor, first.currency, first.succeeded) == (700, "CNY", True)
    assert first.failure_code is None
    assert abs((datetime.now(UTC) - first.finished_at).total_seconds()) < 60
    assert finished is not None
    assert finished.notification_id == f"query:{accepted.channel_refund_id}"
    assert finished == VerifiedRefundNotification(
        notification_id=finished.notification_id,
        refund_id=first.refund_id,
        payment_id=first.payment_id,
        channel_refund_id=first.channel_refund_id,
        amount_minor=first.amount_minor,
        currency=first.currency,
        succeeded=True,
        finished_at=first.finished_at,
    )


async def test_a_failed_refund_frees_its_amount_for_another_refund(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=[])
    async with running_receiver(receiver) as notify_url, refund_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        payment_id = await paid_payment(channel, http_client, 900)
        failing_id, retry_id = random_refund_id(), random_refund_id()

        await set_faults(http_client, psp_url, "alipay", fail_refunds=True)
        await channel.refund(
            payment_id=payment_id, refund_id=failing_id, amount_minor=900, currency="CNY", reason=""
        )
        await set_faults(http_client, psp_url, "alipay")
        await wait_until(
            lambda: len(receiver.bodies_of("refund_status_sync")) >= 1,
            what="the failed refund's notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )
        failed_query = await channel.query_refund(payment_id=payment_id, refund_id=failing_id)
        await channel.refund(
            payment_id=payment_id, refund_id=retry_id, amount_minor=900, currency="CNY", reason=""
        )
        await wait_until(
            lambda: len(receiver.bodies_of("refund_status_sync")) >= 2,
            what="the second refund's notification",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )

    failed, succeeded = read_all(channel, receiver.bodies_of("refund_status_sync"))[:2]
    assert isinstance(failed, VerifiedRefundNotification)
    assert (failed.refund_id, failed.succeeded, failed.failure_code) == (
        failing_id,
        False,
        "refund_failed",
    )
    assert failed.failure_message != ""
    assert failed_query is not None
    assert (failed_query.succeeded, failed_query.failure_code) == (False, "refund_failed")
    assert failed_query.failure_message == failed.failure_message
    assert isinstance(succeeded, VerifiedRefundNotification)
    assert (succeeded.refund_id, succeeded.amount_minor, succeeded.succeeded) == (
        retry_id,
        900,
        True,
    )


async def test_refund_notifications_of_a_marked_trade_are_lost(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=[])
    async with running_receiver(receiver) as notify_url, refund_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        description = f"Order {protocol.LOSE_NOTIFICATIONS_MARKER}"
        payment_id = await paid_payment(channel, http_client, 300, description=description)
        refund_id = random_refund_id()
        await channel.refund(
            payment_id=payment_id, refund_id=refund_id, amount_minor=300, currency="CNY", reason=""
        )
        notified = await comes_true_within(
            lambda: len(receiver.received) > 0, timeout_s=NO_NOTIFICATION_WATCH_S
        )
        finished = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)

    assert not notified
    assert finished is not None
    assert finished.succeeded


async def test_an_earlier_status_notified_out_of_order_is_ignored(
    http_client: httpx.AsyncClient,
) -> None:
    secret = random_secret()
    receiver = NotificationReceiver(answers=[])
    async with running_receiver(receiver) as notify_url, running_simulator(secret) as psp_url:
        channel = alipay(psp_url, secret, http_client, notify_url=notify_url)
        await set_faults(http_client, psp_url, "alipay", out_of_order_notifications=True)
        payment_id = await paid_payment(channel, http_client, 450)
        await wait_until(
            lambda: len(receiver.received) >= 2,
            what="both trade status notifications",
            timeout_s=NOTIFICATION_TIMEOUT_S,
        )

    assert [fields["trade_status"] for fields in receiver.received] == [
        "TRADE_SUCCESS",
        "WAIT_BUYER_PAY",
    ]
    paid, waiting = read_all(channel, receiver.bodies[:2])
    assert isinstance(paid, VerifiedPaymentNotification)
    assert (paid.payment_id, paid.amount_minor) == (payment_id, 450)
    assert waiting == IgnoredNotification(
        notification_id=receiver.received[1]["notify_id"], reason="trade_status_wait_buyer_pay"
    )
