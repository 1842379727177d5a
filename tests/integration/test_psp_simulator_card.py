"""The card adapter against the real PSP simulator, both talking real HTTP on 127.0.0.1.

The simulator and a small webhook receiver each run in a uvicorn server inside the test's
event loop, on ports the operating system picks.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from services.gateway.channels import card_protocol as protocol
from services.gateway.channels.base import (
    ChannelNotification,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from services.gateway.channels.card import CardChannel, CardDeclined
from tests.support import servers
from tests.support.psp import random_id, set_faults
from tests.support.servers import (
    NotifyReceiver,
    bind_local_socket,
    comes_true_within,
    running_receiver,
    wait_until,
)

pytestmark = pytest.mark.integration

MERCHANT_ACCOUNT = "PayrailPlatform"
WEBHOOK_TIMEOUT_S = 10.0
# How long a test watches for a webhook that must not come. The fast retry schedule sends
# the first attempt at once, so a wrongly sent webhook would arrive well within it.
NO_WEBHOOK_WATCH_S = 0.5
REFUND_PROCESSING_MS = 50


class Keys:
    """The merchant's API key and webhook HMAC key, random per test."""

    def __init__(self) -> None:
        self.api_key = f"api-{uuid.uuid4().hex}"
        self.hmac_key = f"hmac-{uuid.uuid4().hex}"


def running_simulator(keys: Keys, **overrides: Any) -> AbstractAsyncContextManager[str]:
    """The simulator whose one card merchant account is MERCHANT_ACCOUNT with `keys`."""
    settings: dict[str, Any] = {
        "card_merchant_account": MERCHANT_ACCOUNT,
        "card_api_key": keys.api_key,
        "card_hmac_key": keys.hmac_key,
        "refund_processing_ms": REFUND_PROCESSING_MS,
        **overrides,
    }
    return servers.running_simulator(**settings)


class WebhookReceiver(NotifyReceiver):
    """Records every webhook and answers from a script, then `[accepted]` for ever."""

    def __init__(self, answers: Sequence[str] = ()) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    async def receive(self, request: Request) -> PlainTextResponse:
        self.bodies.append(await request.body())
        self.headers.append(dict(request.headers))
        index = len(self.bodies) - 1
        return PlainTextResponse(self.answers[index] if index < len(self.answers) else "[accepted]")

    def event_codes(self) -> list[str]:
        return [
            json.loads(body)["notificationItems"][0]["NotificationRequestItem"]["eventCode"]
            for body in self.bodies
        ]

    def read_all(self, channel: CardChannel) -> list[ChannelNotification]:
        now = datetime.now(UTC)
        return [
            channel.read_notification(body, headers, now=now)
            for body, headers in zip(self.bodies, self.headers, strict=True)
        ]


def card(psp_url: str, keys: Keys, http_client: httpx.AsyncClient, **overrides: Any) -> CardChannel:
    arguments: dict[str, Any] = {
        "base_url": psp_url,
        "merchant_account": MERCHANT_ACCOUNT,
        "api_key": keys.api_key,
        "hmac_key": keys.hmac_key,
        "notify_url": "http://127.0.0.1:9/notify",
        "http_client": http_client,
        "timeout_s": 5.0,
        **overrides,
    }
    return CardChannel(**arguments)


async def call_api(
    http_client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    url: str,
    *,
    body: dict[str, object] | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """One raw API request with the merchant's key, for what the adapter never sends."""
    headers = {protocol.API_KEY_HEADER: keys.api_key}
    if idempotency_key is not None:
        headers[protocol.IDEMPOTENCY_KEY_HEADER] = idempotency_key
    return await http_client.request(method, url, json=body, headers=headers, timeout=5.0)


async def authorise_only(
    http_client: httpx.AsyncClient, keys: Keys, psp_url: str, payment_id: str
) -> str:
    """Authorise a payment without capturing it; return its pspReference.

    Sent without an idempotency key: the adapter's own retry, under its key, must find the
    payment by its reference.
    """
    response = await call_api(
        http_client,
        keys,
        "POST",
        f"{psp_url}{protocol.PAYMENTS_PATH}",
        body={
            "merchantAccount": MERCHANT_ACCOUNT,
            "reference": payment_id,
            "amount": {"value": 1000, "currency": "EUR"},
            "notifyUrl": "http://127.0.0.1:9/notify",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["resultCode"] == "Authorised"
    psp_reference: str = response.json()["pspReference"]
    return psp_reference


async def test_prepare_authorises_and_captures_and_the_capture_webhook_proves_the_same(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    receiver = WebhookReceiver(answers=["[not accepted]"])
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)

        paid = await channel.prepare(
            payment_id=payment_id, amount_minor=1234, currency="EUR", description="Order 42"
        )
        await wait_until(
            lambda: len(receiver.bodies) >= 3, what="the webhooks", timeout_s=WEBHOOK_TIMEOUT_S
        )
        queried = await channel.query(payment_id=payment_id)

    now = datetime.now(UTC)
    assert isinstance(paid, VerifiedPaymentNotification)
    assert paid.notification_id.startswith("capture:")
    assert paid.payment_id == payment_id
    assert (paid.amount_minor, paid.currency) == (1234, "EUR")
    assert paid.paid_at.tzinfo is not None
    assert paid.paid_at.utcoffset() is not None
    assert abs((now - paid.paid_at).total_seconds()) < 60
    # The first AUTHORISATION attempt was not acknowledged, so it was sent again.
    assert receiver.event_codes() == ["AUTHORISATION", "AUTHORISATION", "CAPTURE"]
    assert all(headers["content-type"] == "application/json" for headers in receiver.headers)
    authorisation, retried, capture = receiver.read_all(channel)
    assert authorisation == retried
    assert isinstance(authorisation, IgnoredNotification)
    assert authorisation.notification_id == f"authorisation:{paid.channel_trade_id}"
    assert capture == paid
    assert queried == VerifiedPaymentNotification(
        notification_id=f"query:{paid.channel_trade_id}",
        channel_trade_id=paid.channel_trade_id,
        payment_id=payment_id,
        amount_minor=1234,
        currency="EUR",
        paid_at=paid.paid_at,
    )


async def test_a_retried_prepare_returns_the_same_trade_and_captures_once(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    receiver = WebhookReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)

        first = await channel.prepare(
            payment_id=payment_id, amount_minor=500, currency="USD", description="Order"
        )
        second = await channel.prepare(
            payment_id=payment_id, amount_minor=500, currency="USD", description="Order"
        )
        await wait_until(
            lambda: len(receiver.bodies) >= 2, what="the webhooks", timeout_s=WEBHOOK_TIMEOUT_S
        )
        more = await comes_true_within(
            lambda: len(receiver.bodies) > 2, timeout_s=NO_WEBHOOK_WATCH_S
        )

    assert second == first
    assert not more
    assert receiver.event_codes() == ["AUTHORISATION", "CAPTURE"]


async def test_a_prepare_retried_after_an_outage_finishes_the_same_payment(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    async with running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client)
        # The payment was authorised, then the acquirer went down before the capture.
        psp_reference = await authorise_only(http_client, keys, psp_url, payment_id)
        await set_faults(http_client, psp_url, "card", unavailable=True)
        with pytest.raises(ChannelUnavailable):
            await channel.prepare(
                payment_id=payment_id, amount_minor=1000, currency="EUR", description=""
            )
        with pytest.raises(ChannelUnavailable):
            await channel.query(payment_id=payment_id)
        await set_faults(http_client, psp_url, "card")

        paid = await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="EUR", description=""
        )

    assert paid.channel_trade_id == psp_reference


async def test_the_same_payment_id_with_another_amount_conflicts(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    async with running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client)
        await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="EUR", description=""
        )

        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=payment_id, amount_minor=1001, currency="EUR", description=""
            )

    assert raised.value.code == "reference_conflict"


async def test_an_idempotency_key_reused_for_another_request_is_refused(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    url_body: dict[str, object] = {
        "merchantAccount": MERCHANT_ACCOUNT,
        "reference": payment_id,
        "amount": {"value": 1000, "currency": "EUR"},
        "notifyUrl": "http://127.0.0.1:9/notify",
    }
    async with running_simulator(keys) as psp_url:
        url = f"{psp_url}{protocol.PAYMENTS_PATH}"
        first = await call_api(
            http_client, keys, "POST", url, body=url_body, idempotency_key=payment_id
        )
        repeated = await call_api(
            http_client, keys, "POST", url, body=url_body, idempotency_key=payment_id
        )
        other = await call_api(
            http_client,
            keys,
            "POST",
            url,
            body={**url_body, "description": "changed"},
            idempotency_key=payment_id,
        )

    assert repeated.json() == first.json()
    assert other.status_code == 422
    assert other.json()["errorCode"] == "idempotency_key_conflict"


@pytest.mark.parametrize("decline", ["marker", "fault"])
async def test_a_declined_payment_is_rejected_and_never_captured(
    http_client: httpx.AsyncClient, decline: str
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    receiver = WebhookReceiver()
    description = "Order [psp:decline]" if decline == "marker" else "Order"
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)
        if decline == "fault":
            await set_faults(http_client, psp_url, "card", decline_payments=True)

        with pytest.raises(CardDeclined) as raised:
            await channel.prepare(
                payment_id=payment_id, amount_minor=1000, currency="EUR", description=description
            )
        await set_faults(http_client, psp_url, "card")
        with pytest.raises(CardDeclined):
            await channel.prepare(
                payment_id=payment_id, amount_minor=1000, currency="EUR", description=description
            )
        queried = await channel.query(payment_id=payment_id)
        await channel.close(payment_id=payment_id)
        notified = await comes_true_within(
            lambda: len(receiver.bodies) > 0, timeout_s=NO_WEBHOOK_WATCH_S
        )

    assert isinstance(raised.value, ChannelRejected)
    assert raised.value.code == "card_declined"
    assert raised.value.message == "Insufficient Funds"
    assert raised.value.refusal_reason_code == "51"
    assert queried is None
    assert not notified


async def test_duplicated_webhooks_read_as_the_same_notification(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    receiver = WebhookReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)
        await set_faults(http_client, psp_url, "card", duplicate_notifications=True)

        paid = await channel.prepare(
            payment_id=random_id("pay"), amount_minor=99, currency="JPY", description=""
        )
        await wait_until(
            lambda: len(receiver.bodies) >= 4,
            what="the duplicated webhooks",
            timeout_s=WEBHOOK_TIMEOUT_S,
        )

    assert receiver.event_codes() == ["AUTHORISATION", "AUTHORISATION", "CAPTURE", "CAPTURE"]
    readings = receiver.read_all(channel)
    assert readings[2] == readings[3] == paid


async def test_out_of_order_webhooks_bring_the_authorisation_after_the_capture(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    receiver = WebhookReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)
        await set_faults(http_client, psp_url, "card", out_of_order_notifications=True)

        paid = await channel.prepare(
            payment_id=random_id("pay"), amount_minor=700, currency="EUR", description=""
        )
        await wait_until(
            lambda: len(receiver.bodies) >= 2, what="the webhooks", timeout_s=WEBHOOK_TIMEOUT_S
        )

    assert receiver.event_codes() == ["CAPTURE", "AUTHORISATION"]
    capture, authorisation = receiver.read_all(channel)
    assert capture == paid
    assert isinstance(authorisation, IgnoredNotification)


async def test_lost_webhooks_leave_the_query(http_client: httpx.AsyncClient) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    receiver = WebhookReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)
        await set_faults(http_client, psp_url, "card", lose_notifications=True)

        paid = await channel.prepare(
            payment_id=payment_id, amount_minor=700, currency="EUR", description=""
        )
        notified = await comes_true_within(
            lambda: len(receiver.bodies) > 0, timeout_s=NO_WEBHOOK_WATCH_S
        )
        queried = await channel.query(payment_id=payment_id)

    assert not notified
    assert queried is not None
    assert queried.channel_trade_id == paid.channel_trade_id


async def test_close_cancels_an_authorisation_and_refuses_a_captured_payment(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    authorised_id, captured_id = random_id("pay"), random_id("pay")
    async with running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client)
        psp_reference = await authorise_only(http_client, keys, psp_url, authorised_id)
        await channel.prepare(
            payment_id=captured_id, amount_minor=800, currency="USD", description=""
        )

        await channel.close(payment_id=authorised_id)
        await channel.close(payment_id=authorised_id)
        await channel.close(payment_id=random_id("pay"))
        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id=captured_id)
        cancelled = await call_api(
            http_client, keys, "GET", f"{psp_url}/card/v1/payments/by-reference/{authorised_id}"
        )
        with pytest.raises(ChannelRejected) as capture_refused:
            await channel.prepare(
                payment_id=authorised_id, amount_minor=1000, currency="EUR", description=""
            )
        captured = await channel.query(payment_id=captured_id)

    assert raised.value.code == "trade_already_paid"
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["pspReference"] == psp_reference
    assert capture_refused.value.code == "payment_cancelled"
    assert captured is not None


async def test_partial_refunds_up_to_the_captured_amount_then_no_more(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    receiver = WebhookReceiver()
    # A refund id is the merchant's: any printable text, a slash included.
    first_id, second_id, third_id = random_id("re"), f"re/{uuid.uuid4().hex} x", random_id("re")
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)
        await channel.prepare(
            payment_id=payment_id, amount_minor=1000, currency="EUR", description=""
        )

        def refund(refund_id: str, amount_minor: int) -> Any:
            return channel.refund(
                payment_id=payment_id,
                refund_id=refund_id,
                amount_minor=amount_minor,
                currency="EUR",
                reason="requested_by_customer",
            )

        first = await refund(first_id, 400)
        first_again = await refund(first_id, 400)
        second = await refund(second_id, 600)
        with pytest.raises(ChannelRejected) as exceeded:
            await refund(third_id, 1)
        await wait_until(
            lambda: len(receiver.bodies) >= 4,
            what="the refund webhooks",
            timeout_s=WEBHOOK_TIMEOUT_S,
        )
        queried = await channel.query_refund(payment_id=payment_id, refund_id=second_id)
        unknown = await channel.query_refund(payment_id=payment_id, refund_id=third_id)

    assert first_again == first
    assert second.channel_refund_id != first.channel_refund_id
    assert exceeded.value.code == "refund_exceeds_paid"
    assert receiver.event_codes()[2:] == ["REFUND", "REFUND"]
    refunds = [
        notification
        for notification in receiver.read_all(channel)[2:]
        if isinstance(notification, VerifiedRefundNotification)
    ]
    by_id = {notification.refund_id: notification for notification in refunds}
    assert set(by_id) == {first_id, second_id}
    assert by_id[first_id] == VerifiedRefundNotification(
        notification_id=f"refund:{first.channel_refund_id}",
        refund_id=first_id,
        payment_id=payment_id,
        channel_refund_id=first.channel_refund_id,
        amount_minor=400,
        currency="EUR",
        succeeded=True,
        finished_at=by_id[first_id].finished_at,
    )
    assert queried == VerifiedRefundNotification(
        notification_id=f"query:{second.channel_refund_id}",
        refund_id=second_id,
        payment_id=payment_id,
        channel_refund_id=second.channel_refund_id,
        amount_minor=600,
        currency="EUR",
        succeeded=True,
        finished_at=by_id[second_id].finished_at,
    )
    assert unknown is None


async def test_a_failed_refund_is_notified_and_queried_as_failed(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id, refund_id = random_id("pay"), random_id("re")
    receiver = WebhookReceiver()
    async with running_receiver(receiver) as notify_url, running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, notify_url=notify_url)
        await channel.prepare(
            payment_id=payment_id, amount_minor=500, currency="EUR", description=""
        )
        await set_faults(http_client, psp_url, "card", fail_refunds=True)

        accepted = await channel.refund(
            payment_id=payment_id,
            refund_id=refund_id,
            amount_minor=500,
            currency="EUR",
            reason="requested_by_customer",
        )
        await wait_until(
            lambda: len(receiver.bodies) >= 3,
            what="the refund webhook",
            timeout_s=WEBHOOK_TIMEOUT_S,
        )
        queried = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)
        await set_faults(http_client, psp_url, "card")
        # A failed refund frees its amount: the whole payment can be refunded again.
        again = await channel.refund(
            payment_id=payment_id,
            refund_id=random_id("re"),
            amount_minor=500,
            currency="EUR",
            reason="requested_by_customer",
        )

    notified = receiver.read_all(channel)[2]
    assert isinstance(notified, VerifiedRefundNotification)
    assert notified.notification_id == f"refund:{accepted.channel_refund_id}"
    assert not notified.succeeded
    assert notified.failure_code == "refund_failed"
    assert notified.failure_message != ""
    assert queried is not None
    assert queried.notification_id == f"query:{accepted.channel_refund_id}"
    assert (queried.succeeded, queried.failure_code) == (False, "refund_failed")
    assert queried.finished_at == notified.finished_at
    assert again.channel_refund_id != accepted.channel_refund_id


async def test_refunds_of_payments_not_captured_are_refused(
    http_client: httpx.AsyncClient,
) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    async with running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client)
        await authorise_only(http_client, keys, psp_url, payment_id)

        with pytest.raises(ChannelRejected) as not_paid:
            await channel.refund(
                payment_id=payment_id,
                refund_id=random_id("re"),
                amount_minor=100,
                currency="EUR",
                reason="",
            )
        with pytest.raises(ChannelRejected) as unknown:
            await channel.refund(
                payment_id=random_id("pay"),
                refund_id=random_id("re"),
                amount_minor=100,
                currency="EUR",
                reason="",
            )

    assert not_paid.value.code == "trade_not_paid"
    assert unknown.value.code == "trade_not_exist"


async def test_a_refund_still_processing_is_not_final(http_client: httpx.AsyncClient) -> None:
    keys = Keys()
    payment_id, refund_id = random_id("pay"), random_id("re")
    # The refund would finish a minute later: shutdown must not wait for it either.
    async with running_simulator(keys, refund_processing_ms=60_000) as psp_url:
        channel = card(psp_url, keys, http_client)
        await channel.prepare(
            payment_id=payment_id, amount_minor=500, currency="EUR", description=""
        )
        await channel.refund(
            payment_id=payment_id, refund_id=refund_id, amount_minor=200, currency="EUR", reason=""
        )

        queried = await channel.query_refund(payment_id=payment_id, refund_id=refund_id)

    assert queried is None


async def test_an_unavailable_acquirer_is_unavailable(http_client: httpx.AsyncClient) -> None:
    keys = Keys()
    payment_id = random_id("pay")
    async with running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client)
        await set_faults(http_client, psp_url, "card", unavailable=True)

        with pytest.raises(ChannelUnavailable):
            await channel.prepare(
                payment_id=payment_id, amount_minor=100, currency="EUR", description=""
            )
        with pytest.raises(ChannelUnavailable):
            await channel.close(payment_id=payment_id)
        with pytest.raises(ChannelUnavailable):
            await channel.query_refund(payment_id=payment_id, refund_id=random_id("re"))


async def test_a_wrong_api_key_is_unavailable_not_rejected(
    http_client: httpx.AsyncClient,
) -> None:
    # The acquirer did not look at the request, so the payment is not refused: the
    # configuration is wrong, and the same request succeeds once it is fixed.
    keys = Keys()
    payment_id = random_id("pay")
    async with running_simulator(keys) as psp_url:
        channel = card(psp_url, keys, http_client, api_key="not-the-api-key")

        with pytest.raises(ChannelUnavailable) as raised:
            await channel.prepare(
                payment_id=payment_id, amount_minor=100, currency="EUR", description=""
            )
        with pytest.raises(ChannelUnavailable):
            await channel.query(payment_id=payment_id)
        refused = await http_client.get(
            f"{psp_url}/card/v1/payments/by-reference/{payment_id}",
            headers={protocol.API_KEY_HEADER: "not-the-api-key"},
            timeout=5.0,
        )
        paid = await card(psp_url, keys, http_client).prepare(
            payment_id=payment_id, amount_minor=100, currency="EUR", description=""
        )

    assert "401" in str(raised.value)
    assert refused.status_code == 401
    assert refused.json()["errorCode"] == "invalid_api_key"
    assert paid.payment_id == payment_id


async def test_an_unreachable_acquirer_is_unavailable(http_client: httpx.AsyncClient) -> None:
    # A port that was bound and released a moment ago refuses connections.
    listener = bind_local_socket()
    port = listener.getsockname()[1]
    listener.close()
    channel = card(f"http://127.0.0.1:{port}", Keys(), http_client, timeout_s=2.0)

    with pytest.raises(ChannelUnavailable):
        await channel.prepare(
            payment_id=random_id("pay"), amount_minor=100, currency="EUR", description=""
        )
