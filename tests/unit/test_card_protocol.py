"""The card acquirer's webhook signature and the card adapter's checks. Pure and fast.

The adapter's answer handling runs against httpx's in-memory transport: no sockets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.gateway.channels import alipay
from services.gateway.channels import card_protocol as protocol
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    InvalidNotification,
    NotificationAnswer,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from services.gateway.channels.card import CardChannel, CardDeclined

HMAC_KEY = "unit-test-hmac-key"
MERCHANT_ACCOUNT = "PayrailPlatform"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
AUTHORISATION_PSP_REFERENCE = "8815658961765249"
CAPTURE_PSP_REFERENCE = "8815658961765250"
REFUND_PSP_REFERENCE = "8815658961765251"
PAYMENT_ID = "pay_1"
JSON_HEADERS = {"content-type": "application/json"}


def make_channel(http_client: httpx.AsyncClient) -> CardChannel:
    return CardChannel(
        base_url="http://psp.invalid",
        merchant_account=MERCHANT_ACCOUNT,
        api_key="unit-test-api-key",
        hmac_key=HMAC_KEY,
        notify_url="http://gateway.invalid/notify",
        http_client=http_client,
        notification_age_max_s=3600,
    )


@pytest.fixture
async def channel() -> AsyncIterator[CardChannel]:
    # read_notification never sends; the client only satisfies the constructor.
    async with httpx.AsyncClient() as http_client:
        yield make_channel(http_client)


def capture_item(**overrides: Any) -> protocol.NotificationItem:
    item = protocol.NotificationItem(
        event_code="CAPTURE",
        success=True,
        psp_reference=CAPTURE_PSP_REFERENCE,
        original_reference=AUTHORISATION_PSP_REFERENCE,
        merchant_account_code=MERCHANT_ACCOUNT,
        merchant_reference=PAYMENT_ID,
        amount_value=1050,
        currency="EUR",
        event_date="2025-03-01T11:59:30+00:00",
        payment_reference=PAYMENT_ID,
    )
    return dataclasses.replace(item, **overrides)


def refund_item(**overrides: Any) -> protocol.NotificationItem:
    return capture_item(
        event_code="REFUND",
        psp_reference=REFUND_PSP_REFERENCE,
        merchant_reference="re_1",
        amount_value=300,
        **overrides,
    )


def item_fields(item: protocol.NotificationItem) -> dict[str, Any]:
    """The signed JSON object of `item`, to be tampered with by a test."""
    return protocol.notification_request_item(item, HMAC_KEY)


def webhook(fields: Any) -> bytes:
    """A webhook body around one item's (possibly tampered) fields."""
    document = {"live": "false", "notificationItems": [{"NotificationRequestItem": fields}]}
    return json.dumps(document).encode()


def read(channel: CardChannel, body: bytes, *, now: datetime = NOW) -> object:
    return channel.read_notification(body, JSON_HEADERS, now=now)


def rejection_reason(channel: CardChannel, body: bytes, *, now: datetime = NOW) -> str:
    with pytest.raises(InvalidNotification) as raised:
        channel.read_notification(body, JSON_HEADERS, now=now)
    return raised.value.reason


class TestSigningString:
    def test_joins_the_signed_parts_in_order(self) -> None:
        assert protocol.signing_string(capture_item()) == (
            "8815658961765250:8815658961765249:PayrailPlatform:pay_1:1050:EUR:CAPTURE:true:pay_1"
        )

    def test_a_missing_part_is_an_empty_string(self) -> None:
        item = capture_item(event_code="AUTHORISATION", original_reference="", success=False)

        assert protocol.signing_string(item) == (
            "8815658961765250::PayrailPlatform:pay_1:1050:EUR:AUTHORISATION:false:pay_1"
        )

    def test_escapes_colons_and_backslashes_so_parts_cannot_shift(self) -> None:
        shifted = capture_item(merchant_reference="a:b", payment_reference="c")
        other = capture_item(merchant_reference="a", payment_reference="b:c")

        assert protocol.signing_string(shifted) != protocol.signing_string(other)
        assert ":a\\:b:" in protocol.signing_string(shifted)
        assert "x\\\\y" in protocol.signing_string(capture_item(merchant_reference="x\\y"))

    def test_matches_an_independently_computed_signature(self) -> None:
        # printf '%s' '<signing string>' | openssl dgst -sha256 -hmac unit-test-hmac-key
        #   -binary | base64
        expected = "OYvWDxrnhBEhQxtcdo/QT5OUpA6J/gqm5hw2ZIAxArI="

        assert protocol.hmac_signature(capture_item(), HMAC_KEY) == expected


class TestVerifySignature:
    def test_round_trip(self) -> None:
        item = capture_item()

        assert protocol.verify_hmac_signature(
            item, protocol.hmac_signature(item, HMAC_KEY), HMAC_KEY
        )

    @pytest.mark.parametrize(
        "tampered",
        [
            {"psp_reference": "8815658961765299"},
            {"original_reference": "8815658961765298"},
            {"original_reference": ""},
            {"merchant_account_code": "SomeoneElse"},
            {"merchant_reference": "pay_2"},
            {"amount_value": 1051},
            {"currency": "USD"},
            {"event_code": "REFUND"},
            {"success": False},
            {"payment_reference": "pay_2"},
            {"payment_reference": ""},
        ],
    )
    def test_tampering_with_any_signed_part_fails(self, tampered: dict[str, Any]) -> None:
        signature = protocol.hmac_signature(capture_item(), HMAC_KEY)

        assert not protocol.verify_hmac_signature(capture_item(**tampered), signature, HMAC_KEY)

    def test_event_date_and_reason_are_not_signed(self) -> None:
        signature = protocol.hmac_signature(capture_item(), HMAC_KEY)
        changed = capture_item(event_date="2025-03-01T11:00:00+00:00", reason="x")

        assert protocol.verify_hmac_signature(changed, signature, HMAC_KEY)

    def test_another_key_fails(self) -> None:
        signature = protocol.hmac_signature(capture_item(), "another-key")

        assert not protocol.verify_hmac_signature(capture_item(), signature, HMAC_KEY)

    def test_an_empty_or_non_ascii_signature_fails_without_raising(self) -> None:
        assert not protocol.verify_hmac_signature(capture_item(), "", HMAC_KEY)
        assert not protocol.verify_hmac_signature(capture_item(), "é" * 44, HMAC_KEY)


class TestAcknowledgement:
    @pytest.mark.parametrize(
        ("status_code", "body", "acknowledged"),
        [
            (200, b"[accepted]", True),
            (202, b"[accepted]\n", True),
            (200, b"accepted", False),
            (200, b"", False),
            (500, b"[accepted]", False),
        ],
    )
    def test_only_a_2xx_with_accepted_acknowledges(
        self, status_code: int, body: bytes, acknowledged: bool
    ) -> None:
        assert protocol.is_acknowledgement(status_code, body) is acknowledged

    def test_the_adapter_answers_what_the_acquirer_expects(self, channel: CardChannel) -> None:
        accepted = channel.notification_answer(accepted=True)
        refused = channel.notification_answer(accepted=False)

        assert accepted == NotificationAnswer(status_code=200, body="[accepted]")
        assert protocol.is_acknowledgement(accepted.status_code, accepted.body.encode())
        assert refused.status_code == 500
        assert not protocol.is_acknowledgement(refused.status_code, refused.body.encode())


def test_the_adapter_is_a_channel_adapter(channel: CardChannel) -> None:
    # The assignment is what counts: mypy checks it against the Protocol.
    adapter: ChannelAdapter = channel

    assert adapter is channel


class TestReadNotification:
    def test_a_capture_proves_the_payment(self, channel: CardChannel) -> None:
        body = protocol.notification_body(capture_item(), HMAC_KEY)

        assert read(channel, body) == VerifiedPaymentNotification(
            notification_id=f"capture:{CAPTURE_PSP_REFERENCE}",
            channel_trade_id=AUTHORISATION_PSP_REFERENCE,
            payment_id=PAYMENT_ID,
            amount_minor=1050,
            currency="EUR",
            paid_at=datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC),
        )

    def test_converts_the_event_date_to_utc(self, channel: CardChannel) -> None:
        body = protocol.notification_body(
            capture_item(event_date="2025-03-01T12:59:30+01:00"), HMAC_KEY
        )

        notification = read(channel, body)

        assert isinstance(notification, VerifiedPaymentNotification)
        assert notification.paid_at == datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC)
        assert notification.paid_at.utcoffset() == timedelta(0)

    def test_a_successful_refund(self, channel: CardChannel) -> None:
        body = protocol.notification_body(refund_item(), HMAC_KEY)

        assert read(channel, body) == VerifiedRefundNotification(
            notification_id=f"refund:{REFUND_PSP_REFERENCE}",
            refund_id="re_1",
            payment_id=PAYMENT_ID,
            channel_refund_id=REFUND_PSP_REFERENCE,
            amount_minor=300,
            currency="EUR",
            succeeded=True,
            finished_at=datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC),
        )

    def test_a_failed_refund(self, channel: CardChannel) -> None:
        body = protocol.notification_body(
            refund_item(success=False, reason="Refund failed at the issuer"), HMAC_KEY
        )

        notification = read(channel, body)

        assert isinstance(notification, VerifiedRefundNotification)
        assert not notification.succeeded
        assert notification.failure_code == "refund_failed"
        assert notification.failure_message == "Refund failed at the issuer"

    def test_an_authorisation_is_ignored(self, channel: CardChannel) -> None:
        item = capture_item(
            event_code="AUTHORISATION",
            psp_reference=AUTHORISATION_PSP_REFERENCE,
            original_reference="",
        )

        notification = read(channel, protocol.notification_body(item, HMAC_KEY))

        assert notification == IgnoredNotification(
            notification_id=f"authorisation:{AUTHORISATION_PSP_REFERENCE}",
            reason="authorisation_is_informational",
        )

    def test_a_failed_capture_and_an_unknown_event_are_ignored(self, channel: CardChannel) -> None:
        failed = read(channel, protocol.notification_body(capture_item(success=False), HMAC_KEY))
        report = read(
            channel,
            protocol.notification_body(capture_item(event_code="REPORT_AVAILABLE"), HMAC_KEY),
        )

        assert isinstance(failed, IgnoredNotification)
        assert failed.reason == "capture_failed"
        assert isinstance(report, IgnoredNotification)
        assert report.reason == "unhandled_event_code"

    def test_is_pure_so_the_same_webhook_reads_the_same_twice(self, channel: CardChannel) -> None:
        body = protocol.notification_body(capture_item(), HMAC_KEY)

        assert read(channel, body) == read(channel, body)

    def test_ignores_unknown_fields(self, channel: CardChannel) -> None:
        fields = item_fields(capture_item())
        fields["paymentMethod"] = "visa"
        fields["additionalData"]["cardSummary"] = 1111

        assert isinstance(read(channel, webhook(fields)), VerifiedPaymentNotification)

    def test_accepts_a_missing_content_type_and_a_charset(self, channel: CardChannel) -> None:
        body = protocol.notification_body(capture_item(), HMAC_KEY)

        channel.read_notification(body, {}, now=NOW)
        channel.read_notification(
            body, {"content-type": "application/json; charset=utf-8"}, now=NOW
        )


class TestReadNotificationRefuses:
    def test_a_body_that_is_too_large(self, channel: CardChannel) -> None:
        fields = item_fields(capture_item())
        fields["padding"] = "x" * (64 * 1024)

        assert rejection_reason(channel, webhook(fields)) == "too_large"

    def test_another_media_type(self, channel: CardChannel) -> None:
        body = protocol.notification_body(capture_item(), HMAC_KEY)

        with pytest.raises(InvalidNotification) as raised:
            channel.read_notification(
                body, {"content-type": "application/x-www-form-urlencoded"}, now=NOW
            )

        assert raised.value.reason == "unsupported_media_type"

    @pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'"text"', b"\xff\xfe"])
    def test_a_body_that_is_not_a_json_object(self, channel: CardChannel, body: bytes) -> None:
        assert rejection_reason(channel, body) == "invalid_json"

    @pytest.mark.parametrize("item_count", [0, 2])
    def test_anything_but_exactly_one_item(self, channel: CardChannel, item_count: int) -> None:
        wrapper = {"NotificationRequestItem": item_fields(capture_item())}
        body = json.dumps({"live": "false", "notificationItems": [wrapper] * item_count})

        assert rejection_reason(channel, body.encode()) == "not_one_item"

    @pytest.mark.parametrize(
        "document",
        [{"live": "false"}, {"notificationItems": [{}]}, {"notificationItems": [{"x": {}}]}],
    )
    def test_a_missing_envelope(self, channel: CardChannel, document: object) -> None:
        assert rejection_reason(channel, json.dumps(document).encode()) == "missing_field"

    @pytest.mark.parametrize(
        "document",
        [
            {"notificationItems": {"NotificationRequestItem": {}}},
            {"notificationItems": ["item"]},
            {"notificationItems": [{"NotificationRequestItem": []}]},
        ],
    )
    def test_a_malformed_envelope(self, channel: CardChannel, document: object) -> None:
        assert rejection_reason(channel, json.dumps(document).encode()) == "invalid_field"

    @pytest.mark.parametrize(
        "missing",
        [
            "eventCode",
            "success",
            "pspReference",
            "merchantAccountCode",
            "merchantReference",
            "amount",
            "eventDate",
            "additionalData",
        ],
    )
    def test_a_missing_field(self, channel: CardChannel, missing: str) -> None:
        fields = item_fields(capture_item())
        del fields[missing]

        assert rejection_reason(channel, webhook(fields)) == "missing_field"

    def test_an_empty_field(self, channel: CardChannel) -> None:
        fields = {**item_fields(capture_item()), "pspReference": ""}

        assert rejection_reason(channel, webhook(fields)) == "missing_field"

    @pytest.mark.parametrize("missing", ["hmacSignature"])
    def test_a_missing_signature(self, channel: CardChannel, missing: str) -> None:
        fields = item_fields(capture_item())
        del fields["additionalData"][missing]

        assert rejection_reason(channel, webhook(fields)) == "missing_field"

    def test_a_capture_without_original_reference(self, channel: CardChannel) -> None:
        body = protocol.notification_body(capture_item(original_reference=""), HMAC_KEY)

        assert rejection_reason(channel, body) == "missing_field"

    def test_a_refund_without_payment_reference(self, channel: CardChannel) -> None:
        body = protocol.notification_body(refund_item(payment_reference=""), HMAC_KEY)

        assert rejection_reason(channel, body) == "missing_field"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"amount": 1050},
            {"additionalData": "signature"},
            {"success": "yes"},
            {"success": True},
            {"pspReference": 8815658961765250},
            {"merchantAccountCode": ["PayrailPlatform"]},
            {"reason": 5},
        ],
    )
    def test_a_field_of_the_wrong_type(
        self, channel: CardChannel, overrides: dict[str, Any]
    ) -> None:
        fields = {**item_fields(capture_item()), **overrides}

        assert rejection_reason(channel, webhook(fields)) == "invalid_field"

    def test_a_currency_that_is_not_a_string(self, channel: CardChannel) -> None:
        fields = item_fields(capture_item())
        fields["amount"]["currency"] = 978

        assert rejection_reason(channel, webhook(fields)) == "invalid_field"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"merchant_reference": "p" * 129},
            {"payment_reference": "p" * 129},
            {"original_reference": "8" * 129},
            {"merchant_reference": "pay\n1"},
            {"event_code": "E" * 65},
        ],
    )
    def test_an_invalid_id(self, channel: CardChannel, overrides: dict[str, Any]) -> None:
        body = protocol.notification_body(capture_item(**overrides), HMAC_KEY)

        assert rejection_reason(channel, body) == "invalid_field"

    def test_another_merchant_account(self, channel: CardChannel) -> None:
        body = protocol.notification_body(
            capture_item(merchant_account_code="SomeoneElse"), HMAC_KEY
        )

        assert rejection_reason(channel, body) == "wrong_merchant_account"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("pspReference", "8815658961765299"),
            ("originalReference", "8815658961765298"),
            ("merchantReference", "pay_2"),
            ("eventCode", "REFUND"),
            ("success", "false"),
        ],
    )
    def test_a_tampered_field(self, channel: CardChannel, name: str, value: str) -> None:
        fields = {**item_fields(capture_item()), name: value}

        assert rejection_reason(channel, webhook(fields)) == "bad_signature"

    @pytest.mark.parametrize(("name", "value"), [("value", 999999), ("currency", "USD")])
    def test_a_tampered_amount(self, channel: CardChannel, name: str, value: object) -> None:
        fields = item_fields(capture_item())
        fields["amount"][name] = value

        assert rejection_reason(channel, webhook(fields)) == "bad_signature"

    def test_a_tampered_payment_reference(self, channel: CardChannel) -> None:
        fields = item_fields(refund_item())
        fields["additionalData"]["paymentReference"] = "pay_2"

        assert rejection_reason(channel, webhook(fields)) == "bad_signature"

    def test_a_signature_made_with_another_key(self, channel: CardChannel) -> None:
        body = protocol.notification_body(capture_item(), "not-the-key")

        assert rejection_reason(channel, body) == "bad_signature"

    @pytest.mark.parametrize("event_date", ["2025-03-01T11:59:30", "yesterday", "2025-13-01"])
    def test_an_event_date_without_offset_or_unparseable(
        self, channel: CardChannel, event_date: str
    ) -> None:
        body = protocol.notification_body(capture_item(event_date=event_date), HMAC_KEY)

        assert rejection_reason(channel, body) == "invalid_event_date"

    def test_a_stale_webhook(self, channel: CardChannel) -> None:
        event_date = (NOW - timedelta(seconds=3601)).isoformat()
        body = protocol.notification_body(capture_item(event_date=event_date), HMAC_KEY)

        assert rejection_reason(channel, body) == "stale"

    def test_accepts_a_webhook_exactly_at_the_age_limit(self, channel: CardChannel) -> None:
        event_date = (NOW - timedelta(seconds=3600)).isoformat()
        body = protocol.notification_body(capture_item(event_date=event_date), HMAC_KEY)

        assert isinstance(read(channel, body), VerifiedPaymentNotification)

    def test_a_webhook_from_the_future(self, channel: CardChannel) -> None:
        event_date = (NOW + timedelta(seconds=301)).isoformat()
        body = protocol.notification_body(capture_item(event_date=event_date), HMAC_KEY)

        assert rejection_reason(channel, body) == "from_future"

    def test_tolerates_a_little_clock_skew(self, channel: CardChannel) -> None:
        event_date = (NOW + timedelta(seconds=300)).isoformat()
        body = protocol.notification_body(capture_item(event_date=event_date), HMAC_KEY)

        assert isinstance(read(channel, body), VerifiedPaymentNotification)

    @pytest.mark.parametrize("amount_value", [0, -1, 10**18])
    def test_a_signed_amount_that_is_not_positive_or_too_large(
        self, channel: CardChannel, amount_value: int
    ) -> None:
        body = protocol.notification_body(capture_item(amount_value=amount_value), HMAC_KEY)

        assert rejection_reason(channel, body) == "invalid_amount"

    @pytest.mark.parametrize("value", [10.5, 1050.0, "1050", True, None])
    def test_an_amount_that_is_not_an_integer(self, channel: CardChannel, value: object) -> None:
        fields = item_fields(capture_item())
        fields["amount"]["value"] = value

        assert rejection_reason(channel, webhook(fields)) == "invalid_amount"

    def test_an_amount_without_value(self, channel: CardChannel) -> None:
        fields = item_fields(capture_item())
        del fields["amount"]["value"]

        assert rejection_reason(channel, webhook(fields)) == "missing_field"

    @pytest.mark.parametrize("currency", ["eur", "EU", "EURO", "E1R"])
    def test_a_malformed_currency(self, channel: CardChannel, currency: str) -> None:
        body = protocol.notification_body(capture_item(currency=currency), HMAC_KEY)

        assert rejection_reason(channel, body) == "invalid_currency"


def psp_answering(answer: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(answer)


async def call_against(
    answer: Callable[[httpx.Request], httpx.Response],
    operation: Callable[[CardChannel], Any],
) -> Any:
    async with httpx.AsyncClient(transport=psp_answering(answer)) as http_client:
        return await operation(make_channel(http_client))


def prepare(channel: CardChannel) -> Any:
    return channel.prepare(payment_id=PAYMENT_ID, amount_minor=1050, currency="EUR", description="")


def authorised(request: httpx.Request, **overrides: object) -> httpx.Response:
    """The acquirer's answers to a payment that is authorised and then captured."""
    if request.url.path.endswith("/captures"):
        body = {
            "pspReference": CAPTURE_PSP_REFERENCE,
            "paymentPspReference": AUTHORISATION_PSP_REFERENCE,
            "merchantReference": PAYMENT_ID,
            "status": "captured",
            "amount": {"value": 1050, "currency": "EUR"},
            "capturedAt": "2025-03-01T11:59:30+00:00",
        }
    else:
        body = {
            "pspReference": AUTHORISATION_PSP_REFERENCE,
            "merchantReference": PAYMENT_ID,
            "resultCode": "Authorised",
            "amount": {"value": 1050, "currency": "EUR"},
        }
    return httpx.Response(200, json={**body, **overrides})


class TestAnswers:
    async def test_sends_the_api_key_and_the_payment_id_as_idempotency_key(self) -> None:
        requests: list[httpx.Request] = []

        def answer(request: httpx.Request) -> httpx.Response:
            requests.append(request)
            return authorised(request)

        paid = await call_against(answer, prepare)

        assert paid.notification_id == f"capture:{CAPTURE_PSP_REFERENCE}"
        assert [request.url.path for request in requests] == [
            "/card/v1/payments",
            f"/card/v1/payments/{AUTHORISATION_PSP_REFERENCE}/captures",
        ]
        for request in requests:
            assert request.headers["x-api-key"] == "unit-test-api-key"
            assert request.headers["idempotency-key"] == PAYMENT_ID
        authorisation = json.loads(requests[0].content)
        assert authorisation["amount"] == {"value": 1050, "currency": "EUR"}
        assert authorisation["notifyUrl"] == "http://gateway.invalid/notify"
        assert authorisation["description"] == f"payrail payment {PAYMENT_ID}"

    async def test_a_refusal_is_a_card_decline(self) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            return authorised(
                request,
                resultCode="Refused",
                refusalReason="Insufficient Funds",
                refusalReasonCode="51",
            )

        with pytest.raises(CardDeclined) as raised:
            await call_against(answer, prepare)

        assert raised.value.code == "card_declined"
        assert raised.value.message == "Insufficient Funds"
        assert raised.value.refusal_reason_code == "51"

    async def test_a_capture_of_another_authorisation_is_unavailable(self) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            return authorised(request, paymentPspReference="1111111111111111")

        with pytest.raises(ChannelUnavailable):
            await call_against(answer, prepare)

    @pytest.mark.parametrize("status_code", [401, 403, 404, 500, 503])
    async def test_credentials_refused_or_server_errors_are_unavailable(
        self, status_code: int
    ) -> None:
        def answer(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(status_code, json={"errorCode": "x", "message": "no"})

        with pytest.raises(ChannelUnavailable):
            await call_against(answer, prepare)

    @pytest.mark.parametrize(
        ("error_code", "code"),
        [
            ("refund_exceeds_captured", "refund_exceeds_paid"),
            ("payment_not_captured", "trade_not_paid"),
            ("reference_conflict", "reference_conflict"),
            ("Not Lowercase!", "request_refused"),
        ],
    )
    async def test_a_refusal_carries_a_stable_code(self, error_code: str, code: str) -> None:
        def answer(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(422, json={"errorCode": error_code, "message": "no"})

        async def refund(channel: CardChannel) -> object:
            return await channel.refund(
                payment_id=PAYMENT_ID,
                refund_id="re_1",
                amount_minor=100,
                currency="EUR",
                reason="",
            )

        with pytest.raises(ChannelRejected) as raised:
            await call_against(answer, refund)

        assert raised.value.code == code

    async def test_closing_a_captured_payment_is_already_paid(self) -> None:
        def answer(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(422, json={"errorCode": "payment_captured", "message": "no"})

        with pytest.raises(ChannelRejected) as raised:
            await call_against(answer, lambda channel: channel.close(payment_id=PAYMENT_ID))

        assert raised.value.code == alipay.REJECTION_CODE_TRADE_ALREADY_PAID

    async def test_only_the_acquirers_own_404_means_nothing_to_close(self) -> None:
        def acquirer(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(404, json={"errorCode": "payment_not_found", "message": ""})

        def wrong_url(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(404, text="Not Found")

        await call_against(acquirer, lambda channel: channel.close(payment_id=PAYMENT_ID))
        with pytest.raises(ChannelUnavailable):
            await call_against(wrong_url, lambda channel: channel.close(payment_id=PAYMENT_ID))

    async def test_an_answer_that_is_too_large_is_unavailable(self) -> None:
        def answer(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=b" " * (64 * 1024 + 1))

        with pytest.raises(ChannelUnavailable):
            await call_against(answer, lambda channel: channel.query(payment_id=PAYMENT_ID))

    async def test_a_query_answer_about_another_payment_is_unavailable(self) -> None:
        def answer(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                json={
                    "pspReference": AUTHORISATION_PSP_REFERENCE,
                    "merchantReference": "pay_2",
                    "status": "captured",
                    "amount": {"value": 1050, "currency": "EUR"},
                    "capturedAt": "2025-03-01T11:59:30+00:00",
                },
            )

        with pytest.raises(ChannelUnavailable):
            await call_against(answer, lambda channel: channel.query(payment_id=PAYMENT_ID))

    async def test_a_connection_error_is_unavailable(self) -> None:
        def answer(_request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused")

        with pytest.raises(ChannelUnavailable):
            await call_against(answer, prepare)
