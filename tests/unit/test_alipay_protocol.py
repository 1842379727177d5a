"""The Alipay-style signing protocol and the adapter's checks. Pure and fast.

The adapter's answer handling runs against httpx's in-memory transport: no sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest

from services.gateway.channels import alipay_protocol as protocol
from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    InvalidNotification,
    NotificationAnswer,
    PreparedTrade,
    RefundAccepted,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)

SECRET = "unit-test-secret"
APP_ID = "payrail_platform"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def random_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex}"


def make_channel(http_client: httpx.AsyncClient) -> AlipayChannel:
    return AlipayChannel(
        base_url="http://psp.invalid",
        app_id=APP_ID,
        secret=SECRET,
        notify_url="http://gateway.invalid/notify",
        http_client=http_client,
        notification_age_max_s=3600,
    )


@pytest.fixture
async def channel() -> AsyncIterator[AlipayChannel]:
    # verify_notification never sends; the client only satisfies the constructor.
    async with httpx.AsyncClient() as http_client:
        yield make_channel(http_client)


def notification(**overrides: str) -> dict[str, str]:
    """A correctly signed notification; overrides are applied before signing."""
    fields = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": str(int(NOW.timestamp())),
        "notify_type": "trade_status_sync",
        "app_id": APP_ID,
        "trade_no": "2025030100000000000000000042",
        "out_trade_no": random_payment_id(),
        "trade_status": "TRADE_SUCCESS",
        "total_amount_minor": "1050",
        "currency": "CNY",
        "gmt_payment": "2025-03-01T11:59:30+00:00",
    }
    fields.update(overrides)
    return protocol.signed(fields, SECRET)


def resigned(fields: dict[str, str], **overrides: str) -> dict[str, str]:
    return protocol.signed({**fields, **overrides}, SECRET)


class TestCanonicalString:
    def test_sorts_keys_ascending(self) -> None:
        params = {"b": "2", "a": "1", "c": "3"}

        assert protocol.canonical_string(params) == "a=1&b=2&c=3"

    def test_leaves_out_sign_sign_type_and_empty_values(self) -> None:
        params = {"z": "last", "sign": "abc", "sign_type": "HMAC-SHA256", "empty": "", "a": "x"}

        assert protocol.canonical_string(params) == "a=x&z=last"

    def test_sorts_by_code_point_not_by_locale(self) -> None:
        params = {"a_b": "1", "aB": "2", "ab": "3"}

        assert protocol.canonical_string(params) == "aB=2&a_b=1&ab=3"

    def test_empty_parameters_give_an_empty_string(self) -> None:
        assert protocol.canonical_string({}) == ""


class TestSignAndVerify:
    def test_round_trip(self) -> None:
        params = protocol.signed({"app_id": APP_ID, "total_amount_minor": "100"}, SECRET)

        assert params["sign_type"] == "HMAC-SHA256"
        assert protocol.verify(params, SECRET)

    def test_sign_is_lowercase_hex_sha256(self) -> None:
        signature = protocol.sign({"a": "1"}, SECRET)

        assert len(signature) == 64
        assert signature == signature.lower()
        int(signature, 16)

    def test_matches_an_independently_computed_signature(self) -> None:
        # printf 'a=1&b=2' | openssl dgst -sha256 -hmac key
        expected = "b3c18626e7ac81395c1d37966c7ee2258a6967a1b3fdefb4fa339bb19dc73b0e"

        assert protocol.sign({"b": "2", "sign": "x", "a": "1"}, "key") == expected

    def test_a_tampered_field_fails(self) -> None:
        params = protocol.signed({"app_id": APP_ID, "total_amount_minor": "100"}, SECRET)

        assert not protocol.verify({**params, "total_amount_minor": "1000"}, SECRET)

    def test_an_added_field_fails(self) -> None:
        params = protocol.signed({"app_id": APP_ID}, SECRET)

        assert not protocol.verify({**params, "currency": "USD"}, SECRET)

    def test_another_secret_fails(self) -> None:
        params = protocol.signed({"app_id": APP_ID}, SECRET)

        assert not protocol.verify(params, "another-secret")

    def test_a_missing_or_non_ascii_sign_fails_without_raising(self) -> None:
        params = {"app_id": APP_ID}

        assert not protocol.verify(params, SECRET)
        assert not protocol.verify({**params, "sign": ""}, SECRET)
        assert not protocol.verify({**params, "sign": "é" * 64}, SECRET)

    def test_sign_type_and_empty_values_do_not_change_the_signature(self) -> None:
        params = protocol.signed({"app_id": APP_ID}, SECRET)

        assert protocol.verify({**params, "sign_type": "RSA2", "memo": ""}, SECRET)


class TestVerifyNotification:
    def test_accepts_a_valid_notification(self, channel: AlipayChannel) -> None:
        fields = notification()

        verified = channel.verify_notification(fields, now=NOW)

        assert verified.notification_id == fields["notify_id"]
        assert verified.channel_trade_id == fields["trade_no"]
        assert verified.payment_id == fields["out_trade_no"]
        assert verified.amount_minor == 1050
        assert verified.currency == "CNY"
        assert verified.paid_at == datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC)

    def test_converts_gmt_payment_to_utc(self, channel: AlipayChannel) -> None:
        fields = notification(gmt_payment="2025-03-01T19:59:30+08:00")

        verified = channel.verify_notification(fields, now=NOW)

        assert verified.paid_at == datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC)
        assert verified.paid_at.utcoffset() == timedelta(0)

    @pytest.mark.parametrize("missing", sorted(notification()))
    def test_refuses_a_missing_field(self, channel: AlipayChannel, missing: str) -> None:
        fields = notification()
        del fields[missing]

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "missing_field"

    def test_refuses_a_wrong_app_id(self, channel: AlipayChannel) -> None:
        fields = notification(app_id="someone_else")

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "wrong_app_id"

    def test_refuses_a_bad_signature(self, channel: AlipayChannel) -> None:
        fields = {**notification(), "total_amount_minor": "999999"}

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "bad_signature"

    def test_refuses_a_signature_made_with_another_secret(self, channel: AlipayChannel) -> None:
        fields = protocol.signed(notification(), "not-the-secret")

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "bad_signature"

    def test_refuses_another_sign_type(self, channel: AlipayChannel) -> None:
        fields = {**notification(), "sign_type": "RSA2"}

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "unsupported_sign_type"

    def test_refuses_a_stale_notification(self, channel: AlipayChannel) -> None:
        fields = notification(notify_time=str(int(NOW.timestamp()) - 3601))

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "stale"

    def test_accepts_a_notification_exactly_at_the_age_limit(self, channel: AlipayChannel) -> None:
        fields = notification(notify_time=str(int(NOW.timestamp()) - 3600))

        assert channel.verify_notification(fields, now=NOW).amount_minor == 1050

    def test_refuses_a_notification_from_the_future(self, channel: AlipayChannel) -> None:
        fields = notification(notify_time=str(int(NOW.timestamp()) + 301))

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "from_future"

    def test_tolerates_a_little_clock_skew(self, channel: AlipayChannel) -> None:
        fields = notification(notify_time=str(int(NOW.timestamp()) + 300))

        assert channel.verify_notification(fields, now=NOW).amount_minor == 1050

    @pytest.mark.parametrize("notify_time", ["soon", "-5", "1.5e9", " 1740830400"])
    def test_refuses_a_malformed_notify_time(
        self, channel: AlipayChannel, notify_time: str
    ) -> None:
        fields = notification(notify_time=notify_time)

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "invalid_notify_time"

    # "\uff11\uff12" is a full-width "12": int() would accept it, the protocol must not.
    @pytest.mark.parametrize(
        "amount",
        ["10.5", "-1", "0", "007", "+5", "1e3", " 5", "5\n", "\uff11\uff12", "1" * 19, "0x10"],
    )
    def test_refuses_an_amount_that_is_not_a_positive_integer(
        self, channel: AlipayChannel, amount: str
    ) -> None:
        fields = notification(total_amount_minor=amount)

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "invalid_amount"

    def test_accepts_the_largest_eighteen_digit_amount(self, channel: AlipayChannel) -> None:
        fields = notification(total_amount_minor="9" * 18)

        assert channel.verify_notification(fields, now=NOW).amount_minor == 10**18 - 1

    def test_refuses_a_trade_status_other_than_success(self, channel: AlipayChannel) -> None:
        fields = notification(trade_status="TRADE_CLOSED")

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "unexpected_trade_status"

    @pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", "C1Y"])
    def test_refuses_a_malformed_currency(self, channel: AlipayChannel, currency: str) -> None:
        fields = notification(currency=currency)

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "invalid_currency"

    @pytest.mark.parametrize("gmt_payment", ["2025-03-01T11:59:30", "yesterday", "2025-13-01"])
    def test_refuses_a_gmt_payment_without_offset_or_unparseable(
        self, channel: AlipayChannel, gmt_payment: str
    ) -> None:
        fields = notification(gmt_payment=gmt_payment)

        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(fields, now=NOW)

        assert raised.value.reason == "invalid_gmt_payment"

    def test_is_pure_so_the_same_notification_verifies_twice(self, channel: AlipayChannel) -> None:
        fields = notification()

        first = channel.verify_notification(fields, now=NOW)
        second = channel.verify_notification(fields, now=NOW)

        assert first == second


def psp_answering(
    answer: Callable[[dict[str, str]], httpx.Response],
) -> httpx.MockTransport:
    """A stand-in PSP at the transport level: it hands the decoded request to `answer`."""

    def handle(request: httpx.Request) -> httpx.Response:
        return answer(json.loads(request.content))

    return httpx.MockTransport(handle)


def success_answer(request: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    answer = {
        "code": "10000",
        "msg": "Success",
        "trade_no": "2025030100000000000000000042",
        "out_trade_no": request["out_trade_no"],
        "pay_url": "http://psp.invalid/pay/2025030100000000000000000042",
        "qr_code": "http://psp.invalid/qr/2025030100000000000000000042",
    }
    return {**answer, "sign": protocol.sign(answer, secret)}


async def prepare_against(answer: Callable[[dict[str, str]], httpx.Response]) -> PreparedTrade:
    async with httpx.AsyncClient(transport=psp_answering(answer)) as http_client:
        return await make_channel(http_client).prepare(
            payment_id=random_payment_id(), amount_minor=1050, currency="CNY", description="x"
        )


class TestPrepareAnswers:
    async def test_sends_a_signed_request_and_accepts_a_signed_answer(self) -> None:
        requests: list[dict[str, str]] = []

        def answer(request: dict[str, str]) -> httpx.Response:
            requests.append(request)
            return httpx.Response(200, json=success_answer(request))

        prepared = await prepare_against(answer)

        assert prepared.channel_trade_id == "2025030100000000000000000042"
        assert prepared.qr_code is not None
        (request,) = requests
        assert protocol.verify(request, SECRET)
        assert request["sign_type"] == "HMAC-SHA256"
        assert request["total_amount_minor"] == "1050"
        assert request["notify_url"] == "http://gateway.invalid/notify"

    async def test_an_answer_with_a_bad_signature_is_unavailable(self) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            return httpx.Response(200, json=success_answer(request, secret="forged"))

        with pytest.raises(ChannelUnavailable):
            await prepare_against(answer)

    async def test_an_unsigned_success_is_unavailable(self) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            fields = success_answer(request)
            del fields["sign"]
            return httpx.Response(200, json=fields)

        with pytest.raises(ChannelUnavailable):
            await prepare_against(answer)

    @pytest.mark.parametrize("status_code", [500, 502, 503, 404])
    async def test_an_unexpected_status_is_unavailable(self, status_code: int) -> None:
        with pytest.raises(ChannelUnavailable):
            await prepare_against(lambda _request: httpx.Response(status_code, text="oops"))

    async def test_an_answer_that_is_not_json_is_unavailable(self) -> None:
        with pytest.raises(ChannelUnavailable):
            await prepare_against(lambda _request: httpx.Response(200, text="<html>"))

    async def test_a_connection_error_is_unavailable(self) -> None:
        def answer(_request: dict[str, str]) -> httpx.Response:
            raise httpx.ConnectError("connection refused")

        with pytest.raises(ChannelUnavailable):
            await prepare_against(answer)

    async def test_a_signed_refusal_is_rejected_with_the_lowercased_sub_code(self) -> None:
        refusal = {
            "code": "40004",
            "msg": "Business Failed",
            "sub_code": "TRADE_CONFLICT",
            "sub_msg": "exists with another amount",
        }
        signed_refusal = {**refusal, "sign": protocol.sign(refusal, SECRET)}

        with pytest.raises(ChannelRejected) as raised:
            await prepare_against(lambda _request: httpx.Response(200, json=signed_refusal))

        assert raised.value.code == "trade_conflict"
        assert raised.value.message == "exists with another amount"

    async def test_a_refusal_with_a_forged_signature_is_unavailable(self) -> None:
        refusal = {"code": "40004", "msg": "Business Failed", "sub_code": "TRADE_CONFLICT"}
        forged_refusal = {**refusal, "sign": protocol.sign(refusal, "forged")}

        with pytest.raises(ChannelUnavailable):
            await prepare_against(lambda _request: httpx.Response(200, json=forged_refusal))

    async def test_an_unknown_code_is_unavailable(self) -> None:
        busy = {"code": "20000", "msg": "Service Unavailable"}

        with pytest.raises(ChannelUnavailable):
            await prepare_against(lambda _request: httpx.Response(200, json=busy))


def closed_answer(
    request: dict[str, str], secret: str = SECRET, **overrides: str
) -> dict[str, str]:
    answer = {
        "code": "10000",
        "msg": "Success",
        "trade_no": "2025030100000000000000000042",
        "out_trade_no": request["out_trade_no"],
        "trade_status": "TRADE_CLOSED",
        **overrides,
    }
    return {**answer, "sign": protocol.sign(answer, secret)}


def signed_refusal(sub_code: str, sub_msg: str, secret: str = SECRET) -> dict[str, str]:
    refusal = {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}
    return {**refusal, "sign": protocol.sign(refusal, secret)}


async def close_against(answer: Callable[[dict[str, str]], httpx.Response]) -> None:
    async with httpx.AsyncClient(transport=psp_answering(answer)) as http_client:
        await make_channel(http_client).close(payment_id=random_payment_id())


class TestCloseAnswers:
    async def test_sends_a_signed_request_and_accepts_a_signed_closed_answer(self) -> None:
        requests: list[dict[str, str]] = []
        paths: list[str] = []

        def handle(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            fields = json.loads(request.content)
            requests.append(fields)
            return httpx.Response(200, json=closed_answer(fields))

        payment_id = random_payment_id()
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http_client:
            await make_channel(http_client).close(payment_id=payment_id)

        assert paths == [protocol.CLOSE_PATH]
        (request,) = requests
        assert protocol.verify(request, SECRET)
        assert request["sign_type"] == "HMAC-SHA256"
        assert request["app_id"] == APP_ID
        assert request["out_trade_no"] == payment_id
        assert request["nonce"] != ""
        assert request["timestamp"].isdigit()

    async def test_a_signed_trade_not_exist_means_nothing_to_close(self) -> None:
        refusal = signed_refusal("TRADE_NOT_EXIST", "no such trade")

        await close_against(lambda _request: httpx.Response(200, json=refusal))

    async def test_an_unsigned_trade_not_exist_is_unavailable(self) -> None:
        # Treating a forged "no such trade" as closed could leave a payable trade behind.
        refusal = signed_refusal("TRADE_NOT_EXIST", "no such trade")
        del refusal["sign"]

        with pytest.raises(ChannelUnavailable):
            await close_against(lambda _request: httpx.Response(200, json=refusal))

    async def test_a_trade_status_error_is_rejected_as_already_paid(self) -> None:
        refusal = signed_refusal("TRADE_STATUS_ERROR", "trade 42 is already paid")

        with pytest.raises(ChannelRejected) as raised:
            await close_against(lambda _request: httpx.Response(200, json=refusal))

        assert raised.value.code == "trade_already_paid"
        assert raised.value.message == "trade 42 is already paid"

    async def test_another_refusal_is_rejected_with_the_lowercased_sub_code(self) -> None:
        refusal = signed_refusal("INVALID_PARAMETER", "out_trade_no is malformed")

        with pytest.raises(ChannelRejected) as raised:
            await close_against(lambda _request: httpx.Response(200, json=refusal))

        assert raised.value.code == "invalid_parameter"
        assert raised.value.message == "out_trade_no is malformed"

    async def test_an_unsigned_refusal_of_the_request_signature_is_rejected(self) -> None:
        refusal = {
            "code": "40004",
            "msg": "Business Failed",
            "sub_code": "INVALID_SIGNATURE",
            "sub_msg": "signature does not verify",
        }

        with pytest.raises(ChannelRejected) as raised:
            await close_against(lambda _request: httpx.Response(200, json=refusal))

        assert raised.value.code == "invalid_signature"

    @pytest.mark.parametrize("sub_code", ["TRADE_STATUS_ERROR", "TRADE_NOT_EXIST"])
    async def test_a_refusal_with_a_forged_signature_is_unavailable(self, sub_code: str) -> None:
        refusal = signed_refusal(sub_code, "forged", secret="forged")

        with pytest.raises(ChannelUnavailable):
            await close_against(lambda _request: httpx.Response(200, json=refusal))

    async def test_an_answer_with_a_bad_signature_is_unavailable(self) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            return httpx.Response(200, json=closed_answer(request, secret="forged"))

        with pytest.raises(ChannelUnavailable):
            await close_against(answer)

    async def test_an_unsigned_success_is_unavailable(self) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            fields = closed_answer(request)
            del fields["sign"]
            return httpx.Response(200, json=fields)

        with pytest.raises(ChannelUnavailable):
            await close_against(answer)

    async def test_a_success_for_another_trade_is_unavailable(self) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            return httpx.Response(
                200, json=closed_answer(request, out_trade_no=random_payment_id())
            )

        with pytest.raises(ChannelUnavailable):
            await close_against(answer)

    async def test_a_success_that_does_not_say_closed_is_unavailable(self) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            return httpx.Response(200, json=closed_answer(request, trade_status="TRADE_SUCCESS"))

        with pytest.raises(ChannelUnavailable):
            await close_against(answer)

    @pytest.mark.parametrize("status_code", [500, 502, 503, 404])
    async def test_an_unexpected_status_is_unavailable(self, status_code: int) -> None:
        with pytest.raises(ChannelUnavailable):
            await close_against(lambda _request: httpx.Response(status_code, text="oops"))

    async def test_an_answer_that_is_not_json_is_unavailable(self) -> None:
        with pytest.raises(ChannelUnavailable):
            await close_against(lambda _request: httpx.Response(200, text="<html>"))

    async def test_a_timeout_is_unavailable(self) -> None:
        def answer(_request: dict[str, str]) -> httpx.Response:
            raise httpx.ReadTimeout("no answer")

        with pytest.raises(ChannelUnavailable):
            await close_against(answer)

    async def test_a_connection_error_is_unavailable(self) -> None:
        def answer(_request: dict[str, str]) -> httpx.Response:
            raise httpx.ConnectError("connection refused")

        with pytest.raises(ChannelUnavailable):
            await close_against(answer)

    async def test_an_unknown_code_is_unavailable(self) -> None:
        busy = {"code": "20000", "msg": "Service Unavailable"}

        with pytest.raises(ChannelUnavailable):
            await close_against(lambda _request: httpx.Response(200, json=busy))


def query_answer(payment_id: str, trade_status: str, **extra: str) -> dict[str, str]:
    answer = {
        "code": "10000",
        "msg": "Success",
        "trade_no": "2025030100001",
        "out_trade_no": payment_id,
        "trade_status": trade_status,
        "total_amount_minor": "1999",
        "currency": "CNY",
        **extra,
    }
    return protocol.signed(answer, SECRET)


async def query_against(
    payment_id: str, answer: Callable[[httpx.Request], httpx.Response]
) -> VerifiedPaymentNotification | None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http_client:
        return await make_channel(http_client).query(payment_id=payment_id)


class TestQueryAnswers:
    async def test_a_paid_trade_reads_as_a_notification_named_after_the_query(self) -> None:
        payment_id = random_payment_id()
        paths: list[str] = []

        def handle(request: httpx.Request) -> httpx.Response:
            paths.append(f"{request.url.path}?{request.url.query.decode()}")
            answer = query_answer(
                payment_id, "TRADE_SUCCESS", gmt_payment="2025-03-01T12:00:00+00:00"
            )
            return httpx.Response(200, json=answer)

        paid = await query_against(payment_id, handle)

        assert paths == [f"{protocol.TRADE_QUERY_PATH_PREFIX}{payment_id}?app_id={APP_ID}"]
        assert paid is not None
        assert paid.notification_id == "query:2025030100001"
        assert (paid.payment_id, paid.amount_minor, paid.currency) == (payment_id, 1999, "CNY")
        assert paid.paid_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    @pytest.mark.parametrize("status", ["WAIT_BUYER_PAY", "TRADE_CLOSED"])
    async def test_an_unpaid_or_closed_trade_is_none(self, status: str) -> None:
        payment_id = random_payment_id()
        answer = query_answer(payment_id, status)
        assert await query_against(payment_id, lambda _r: httpx.Response(200, json=answer)) is None

    async def test_a_signed_unknown_trade_is_none(self) -> None:
        refusal = signed_refusal("TRADE_NOT_EXIST", "no such trade")
        payment_id = random_payment_id()
        assert await query_against(payment_id, lambda _r: httpx.Response(200, json=refusal)) is None

    @pytest.mark.parametrize(
        "answer",
        [
            lambda pid: {**query_answer(pid, "TRADE_SUCCESS"), "sign": "0" * 64},
            lambda pid: query_answer("pay_other", "TRADE_SUCCESS"),
            lambda pid: query_answer(pid, "TRADE_SUCCESS"),  # paid but no gmt_payment
            lambda pid: {"code": "40004", "sub_code": "TRADE_NOT_EXIST"},  # unsigned
        ],
    )
    async def test_an_answer_that_proves_nothing_is_unavailable(
        self, answer: Callable[[str], dict[str, str]]
    ) -> None:
        payment_id = random_payment_id()
        with pytest.raises(ChannelUnavailable):
            await query_against(payment_id, lambda _r: httpx.Response(200, json=answer(payment_id)))


def form(fields: dict[str, str]) -> bytes:
    """A callback body as the channel posts it."""
    return urlencode(fields).encode()


FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


def waiting_notification(**overrides: str) -> dict[str, str]:
    """A correctly signed earlier-status notification, as sent out of order: no payment."""
    fields = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": str(int(NOW.timestamp())),
        "notify_type": "trade_status_sync",
        "app_id": APP_ID,
        "trade_no": "2025030100000000000000000042",
        "out_trade_no": random_payment_id(),
        "trade_status": "WAIT_BUYER_PAY",
        "total_amount_minor": "1050",
        "currency": "CNY",
    }
    fields.update(overrides)
    return protocol.signed(fields, SECRET)


def refund_notification(**overrides: str) -> dict[str, str]:
    """A correctly signed refund success notification; overrides are applied before signing."""
    fields = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": str(int(NOW.timestamp())),
        "notify_type": "refund_status_sync",
        "app_id": APP_ID,
        "trade_no": "2025030100000000000000000042",
        "out_trade_no": random_payment_id(),
        "out_request_no": f"ref_{uuid.uuid4().hex}",
        "refund_no": "R2025030100000000000000000007",
        "refund_status": "REFUND_SUCCESS",
        "refund_amount_minor": "300",
        "currency": "CNY",
        "gmt_refund": "2025-03-01T11:59:40+00:00",
    }
    fields.update(overrides)
    return protocol.signed(fields, SECRET)


def failed_refund_notification(**overrides: str) -> dict[str, str]:
    return refund_notification(
        refund_status="REFUND_FAIL", fail_reason="the payer's account is closed", **overrides
    )


def read(channel: AlipayChannel, fields: dict[str, str]) -> object:
    return channel.read_notification(form(fields), FORM_HEADERS, now=NOW)


def read_refusal(channel: AlipayChannel, body: bytes) -> InvalidNotification:
    with pytest.raises(InvalidNotification) as raised:
        channel.read_notification(body, FORM_HEADERS, now=NOW)
    return raised.value


class TestReadNotification:
    def test_the_adapter_offers_the_channel_interface(self, channel: AlipayChannel) -> None:
        adapter: ChannelAdapter = channel

        assert adapter.notification_answer(accepted=True).body == "success"

    def test_a_payment_reads_as_verify_notification_verifies_it(
        self, channel: AlipayChannel
    ) -> None:
        fields = notification(gmt_payment="2025-03-01T19:59:30+08:00")

        read_back = read(channel, fields)

        assert read_back == channel.verify_notification(fields, now=NOW)
        assert isinstance(read_back, VerifiedPaymentNotification)
        assert read_back.paid_at == datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC)

    def test_headers_are_not_needed(self, channel: AlipayChannel) -> None:
        fields = notification()

        read_back = channel.read_notification(form(fields), {}, now=NOW)

        assert isinstance(read_back, VerifiedPaymentNotification)

    @pytest.mark.parametrize(
        ("trade_status", "reason"),
        [
            ("WAIT_BUYER_PAY", "trade_status_wait_buyer_pay"),
            ("TRADE_CLOSED", "trade_status_trade_closed"),
            ("TRADE_FINISHED", "trade_status_trade_finished"),
        ],
    )
    def test_an_earlier_or_later_trade_status_is_ignored(
        self, channel: AlipayChannel, trade_status: str, reason: str
    ) -> None:
        fields = waiting_notification(trade_status=trade_status)

        assert read(channel, fields) == IgnoredNotification(
            notification_id=fields["notify_id"], reason=reason
        )

    def test_verify_notification_still_refuses_an_ignorable_status(
        self, channel: AlipayChannel
    ) -> None:
        with pytest.raises(InvalidNotification) as raised:
            channel.verify_notification(waiting_notification(), now=NOW)

        assert raised.value.reason == "missing_field"

    def test_an_ignorable_status_must_be_signed(self, channel: AlipayChannel) -> None:
        fields = {**waiting_notification(), "out_trade_no": random_payment_id()}

        assert read_refusal(channel, form(fields)).reason == "bad_signature"

    def test_an_ignorable_status_must_be_fresh(self, channel: AlipayChannel) -> None:
        fields = waiting_notification(notify_time=str(int(NOW.timestamp()) - 3601))

        assert read_refusal(channel, form(fields)).reason == "stale"

    @pytest.mark.parametrize("missing", ["trade_no", "out_trade_no", "notify_id"])
    def test_an_ignorable_status_needs_its_trade(
        self, channel: AlipayChannel, missing: str
    ) -> None:
        fields = waiting_notification()
        del fields[missing]

        assert read_refusal(channel, form(protocol.signed(fields, SECRET))).reason == (
            "missing_field"
        )

    def test_an_unknown_trade_status_is_refused(self, channel: AlipayChannel) -> None:
        fields = waiting_notification(trade_status="TRADE_PENDING")

        assert read_refusal(channel, form(fields)).reason == "unexpected_trade_status"

    def test_an_unknown_notify_type_is_refused(self, channel: AlipayChannel) -> None:
        fields = refund_notification(notify_type="dispute_status_sync")

        assert read_refusal(channel, form(fields)).reason == "unexpected_notify_type"

    def test_a_refund_success_reads_as_a_succeeded_refund(self, channel: AlipayChannel) -> None:
        fields = refund_notification(gmt_refund="2025-03-01T19:59:40+08:00")

        assert read(channel, fields) == VerifiedRefundNotification(
            notification_id=fields["notify_id"],
            refund_id=fields["out_request_no"],
            payment_id=fields["out_trade_no"],
            channel_refund_id="R2025030100000000000000000007",
            amount_minor=300,
            currency="CNY",
            succeeded=True,
            finished_at=datetime(2025, 3, 1, 11, 59, 40, tzinfo=UTC),
        )

    def test_a_refund_failure_reads_as_a_failed_refund(self, channel: AlipayChannel) -> None:
        fields = failed_refund_notification()

        read_back = read(channel, fields)

        assert isinstance(read_back, VerifiedRefundNotification)
        assert not read_back.succeeded
        assert read_back.failure_code == "refund_failed"
        assert read_back.failure_message == "the payer's account is closed"
        assert read_back.refund_id == fields["out_request_no"]
        assert read_back.amount_minor == 300
        assert read_back.finished_at == datetime(2025, 3, 1, 11, 59, 40, tzinfo=UTC)

    def test_a_long_failure_reason_is_cut(self, channel: AlipayChannel) -> None:
        fields = refund_notification(refund_status="REFUND_FAIL", fail_reason="x" * 1000)

        read_back = read(channel, fields)

        assert isinstance(read_back, VerifiedRefundNotification)
        assert read_back.failure_message == "x" * 256

    def test_the_same_refund_notification_reads_the_same_twice(
        self, channel: AlipayChannel
    ) -> None:
        fields = refund_notification()

        assert read(channel, fields) == read(channel, fields)

    @pytest.mark.parametrize("missing", sorted(refund_notification()))
    def test_a_refund_notification_missing_a_field_is_refused(
        self, channel: AlipayChannel, missing: str
    ) -> None:
        fields = refund_notification()
        del fields[missing]

        assert read_refusal(channel, form(fields)).reason == "missing_field"

    def test_a_refund_failure_without_its_reason_is_refused(self, channel: AlipayChannel) -> None:
        fields = refund_notification(refund_status="REFUND_FAIL")

        assert read_refusal(channel, form(fields)).reason == "missing_field"

    def test_a_refund_with_a_tampered_amount_is_refused(self, channel: AlipayChannel) -> None:
        fields = {**refund_notification(), "refund_amount_minor": "30000"}

        assert read_refusal(channel, form(fields)).reason == "bad_signature"

    def test_a_refund_signed_with_another_secret_is_refused(self, channel: AlipayChannel) -> None:
        fields = protocol.signed(refund_notification(), "not-the-secret")

        assert read_refusal(channel, form(fields)).reason == "bad_signature"

    def test_a_refund_for_another_app_is_refused(self, channel: AlipayChannel) -> None:
        fields = refund_notification(app_id="someone_else")

        assert read_refusal(channel, form(fields)).reason == "wrong_app_id"

    def test_a_stale_refund_notification_is_refused(self, channel: AlipayChannel) -> None:
        fields = refund_notification(notify_time=str(int(NOW.timestamp()) - 3601))

        assert read_refusal(channel, form(fields)).reason == "stale"

    @pytest.mark.parametrize(
        "amount", ["10.5", "-1", "0", "007", "+5", "1e3", " 5", "\uff11\uff12", "1" * 19]
    )
    def test_a_refund_amount_that_is_not_a_positive_integer_is_refused(
        self, channel: AlipayChannel, amount: str
    ) -> None:
        fields = refund_notification(refund_amount_minor=amount)

        assert read_refusal(channel, form(fields)).reason == "invalid_amount"

    @pytest.mark.parametrize("currency", ["cny", "CN", "C1Y"])
    def test_a_refund_with_a_malformed_currency_is_refused(
        self, channel: AlipayChannel, currency: str
    ) -> None:
        fields = refund_notification(currency=currency)

        assert read_refusal(channel, form(fields)).reason == "invalid_currency"

    @pytest.mark.parametrize("gmt_refund", ["2025-03-01T11:59:40", "later", "2025-13-01"])
    def test_a_refund_with_a_bad_gmt_refund_is_refused(
        self, channel: AlipayChannel, gmt_refund: str
    ) -> None:
        fields = refund_notification(gmt_refund=gmt_refund)

        assert read_refusal(channel, form(fields)).reason == "invalid_gmt_refund"

    @pytest.mark.parametrize("refund_status", ["REFUND_PROCESSING", "REFUND_MAYBE"])
    def test_a_refund_that_is_not_finished_is_refused(
        self, channel: AlipayChannel, refund_status: str
    ) -> None:
        fields = refund_notification(refund_status=refund_status)

        assert read_refusal(channel, form(fields)).reason == "unexpected_refund_status"

    @pytest.mark.parametrize("name", ["out_request_no", "refund_no", "notify_id"])
    def test_a_refund_with_an_overlong_identifier_is_refused(
        self, channel: AlipayChannel, name: str
    ) -> None:
        fields = refund_notification(**{name: "x" * 129})

        assert read_refusal(channel, form(fields)).reason == "invalid_field"

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"notify_id",
            b"notify_id=1&&app_id=2",
            b"notify_id=%ff",
            "notify_id=caf\u00e9".encode("latin-1"),
            b"&".join(f"f{index}=v".encode() for index in range(65)),
            form(notification()) + b"&currency=USD",
            b"a=" + b"x" * (16 * 1024),
        ],
        ids=[
            "empty",
            "no-equals",
            "empty-pair",
            "bad-percent-escape",
            "not-utf-8",
            "too-many-fields",
            "repeated-field",
            "too-large",
        ],
    )
    def test_a_malformed_body_is_refused(self, channel: AlipayChannel, body: bytes) -> None:
        reason = read_refusal(channel, body).reason

        # An empty body is a valid empty form that lacks every field.
        assert reason == ("missing_field" if body == b"" else "malformed")

    def test_a_body_of_exactly_the_size_limit_is_read(self, channel: AlipayChannel) -> None:
        # Every field but the padding has the same length in each notification() call.
        short_length = len(form(notification(memo="x")))
        fields = notification(memo="x" * (1 + 16 * 1024 - short_length))

        assert len(form(fields)) == 16 * 1024
        assert isinstance(read(channel, fields), VerifiedPaymentNotification)


class TestNotificationAnswer:
    def test_accepted_stops_the_retries_with_success(self, channel: AlipayChannel) -> None:
        assert channel.notification_answer(accepted=True) == NotificationAnswer(200, "success")

    def test_not_accepted_asks_for_a_retry(self, channel: AlipayChannel) -> None:
        answer = channel.notification_answer(accepted=False)

        assert answer == NotificationAnswer(400, "fail")
        assert answer.media_type == "text/plain"


def refund_answer(
    request: dict[str, str], secret: str = SECRET, **overrides: str
) -> dict[str, str]:
    answer = {
        "code": "10000",
        "msg": "Success",
        "trade_no": "2025030100000000000000000042",
        "out_trade_no": request["out_trade_no"],
        "out_request_no": request["out_request_no"],
        "refund_no": "R2025030100000000000000000007",
        "refund_status": "REFUND_PROCESSING",
        "refund_amount_minor": request["refund_amount_minor"],
        "currency": request["currency"],
        **overrides,
    }
    return {**answer, "sign": protocol.sign(answer, secret)}


async def refund_against(
    answer: Callable[[dict[str, str]], httpx.Response], reason: str = "damaged"
) -> RefundAccepted:
    async with httpx.AsyncClient(transport=psp_answering(answer)) as http_client:
        return await make_channel(http_client).refund(
            payment_id=random_payment_id(),
            refund_id=f"ref_{uuid.uuid4().hex}",
            amount_minor=300,
            currency="CNY",
            reason=reason,
        )


class TestRefundAnswers:
    async def test_sends_a_signed_request_and_accepts_a_signed_answer(self) -> None:
        requests: list[dict[str, str]] = []
        paths: list[str] = []

        def handle(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            fields = json.loads(request.content)
            requests.append(fields)
            return httpx.Response(200, json=refund_answer(fields))

        payment_id = random_payment_id()
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http_client:
            accepted = await make_channel(http_client).refund(
                payment_id=payment_id,
                refund_id="ref_1",
                amount_minor=300,
                currency="CNY",
                reason="  damaged  ",
            )

        assert accepted == RefundAccepted(channel_refund_id="R2025030100000000000000000007")
        assert paths == [protocol.REFUND_PATH]
        (request,) = requests
        assert protocol.verify(request, SECRET)
        assert request["sign_type"] == "HMAC-SHA256"
        assert request["app_id"] == APP_ID
        assert request["out_trade_no"] == payment_id
        assert request["out_request_no"] == "ref_1"
        assert request["refund_amount_minor"] == "300"
        assert request["currency"] == "CNY"
        assert request["refund_reason"] == "damaged"
        assert request["notify_url"] == "http://gateway.invalid/notify"
        assert request["timestamp"].isdigit()
        assert request["nonce"] != ""

    async def test_a_long_reason_is_cut(self) -> None:
        requests: list[dict[str, str]] = []

        def answer(request: dict[str, str]) -> httpx.Response:
            requests.append(request)
            return httpx.Response(200, json=refund_answer(request))

        await refund_against(answer, reason="y" * 300)

        assert requests[0]["refund_reason"] == "y" * 256

    @pytest.mark.parametrize("refund_status", ["REFUND_SUCCESS", "REFUND_FAIL"])
    async def test_a_retry_of_a_finished_refund_is_still_accepted(self, refund_status: str) -> None:
        def answer(request: dict[str, str]) -> httpx.Response:
            return httpx.Response(200, json=refund_answer(request, refund_status=refund_status))

        accepted = await refund_against(answer)

        assert accepted.channel_refund_id == "R2025030100000000000000000007"

    @pytest.mark.parametrize(
        ("sub_code", "code"),
        [
            ("REFUND_AMOUNT_EXCEEDED", "refund_exceeds_paid"),
            ("TRADE_NOT_EXIST", "trade_not_paid"),
            ("TRADE_STATUS_ERROR", "trade_not_paid"),
            ("REFUND_CONFLICT", "refund_conflict"),
            ("INVALID_PARAMETER", "invalid_parameter"),
        ],
    )
    async def test_a_signed_refusal_is_rejected_with_a_stable_code(
        self, sub_code: str, code: str
    ) -> None:
        refusal = signed_refusal(sub_code, "refused for a reason")

        with pytest.raises(ChannelRejected) as raised:
            await refund_against(lambda _request: httpx.Response(200, json=refusal))

        assert raised.value.code == code
        assert raised.value.message == "refused for a reason"

    @pytest.mark.parametrize("sub_code", ["INVALID_SIGNATURE", "INVALID_APP_ID"])
    async def test_an_unsigned_refusal_of_the_request_itself_is_rejected(
        self, sub_code: str
    ) -> None:
        refusal = signed_refusal(sub_code, "who are you")
        del refusal["sign"]

        with pytest.raises(ChannelRejected) as raised:
            await refund_against(lambda _request: httpx.Response(200, json=refusal))

        assert raised.value.code == sub_code.lower()

    @pytest.mark.parametrize("sub_code", ["REFUND_AMOUNT_EXCEEDED", "TRADE_STATUS_ERROR"])
    async def test_an_unsigned_business_refusal_is_unavailable(self, sub_code: str) -> None:
        # Giving a refund up on a forged refusal could leave money refunded unrecorded.
        refusal = signed_refusal(sub_code, "forged")
        del refusal["sign"]

        with pytest.raises(ChannelUnavailable):
            await refund_against(lambda _request: httpx.Response(200, json=refusal))

    async def test_a_refusal_with_a_forged_signature_is_unavailable(self) -> None:
        refusal = signed_refusal("REFUND_AMOUNT_EXCEEDED", "forged", secret="forged")

        with pytest.raises(ChannelUnavailable):
            await refund_against(lambda _request: httpx.Response(200, json=refusal))

    @pytest.mark.parametrize(
        "answer",
        [
            lambda request: refund_answer(request, secret="forged"),
            lambda request: {**refund_answer(request), "sign": ""},
            lambda request: refund_answer(request, out_request_no="ref_other"),
            lambda request: refund_answer(request, out_trade_no="pay_other"),
            lambda request: refund_answer(request, refund_no=""),
            lambda request: refund_answer(request, refund_status="REFUND_MAYBE"),
            lambda request: {"code": "20000", "msg": "Service Unavailable"},
        ],
        ids=[
            "forged",
            "unsigned",
            "other-refund",
            "other-trade",
            "no-refund-no",
            "unknown-status",
            "busy",
        ],
    )
    async def test_an_answer_that_proves_nothing_is_unavailable(
        self, answer: Callable[[dict[str, str]], dict[str, str]]
    ) -> None:
        with pytest.raises(ChannelUnavailable):
            await refund_against(lambda request: httpx.Response(200, json=answer(request)))

    @pytest.mark.parametrize("status_code", [500, 503, 404])
    async def test_an_unexpected_status_is_unavailable(self, status_code: int) -> None:
        with pytest.raises(ChannelUnavailable):
            await refund_against(lambda _request: httpx.Response(status_code, text="oops"))

    async def test_a_timeout_is_unavailable(self) -> None:
        def answer(_request: dict[str, str]) -> httpx.Response:
            raise httpx.ReadTimeout("no answer")

        with pytest.raises(ChannelUnavailable):
            await refund_against(answer)


def refund_query_answer(
    payment_id: str, refund_id: str, refund_status: str, **extra: str
) -> dict[str, str]:
    answer = {
        "code": "10000",
        "msg": "Success",
        "trade_no": "2025030100001",
        "out_trade_no": payment_id,
        "out_request_no": refund_id,
        "refund_no": "R2025030100007",
        "refund_status": refund_status,
        "refund_amount_minor": "250",
        "currency": "CNY",
        **extra,
    }
    return protocol.signed(answer, SECRET)


async def query_refund_against(
    payment_id: str, refund_id: str, answer: Callable[[httpx.Request], httpx.Response]
) -> VerifiedRefundNotification | None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http_client:
        return await make_channel(http_client).query_refund(
            payment_id=payment_id, refund_id=refund_id
        )


class TestQueryRefundAnswers:
    async def test_a_succeeded_refund_reads_as_a_notification_named_after_the_query(
        self,
    ) -> None:
        payment_id = random_payment_id()
        requests: list[httpx.Request] = []

        def handle(request: httpx.Request) -> httpx.Response:
            requests.append(request)
            answer = refund_query_answer(
                payment_id, "ref_9", "REFUND_SUCCESS", gmt_refund="2025-03-01T20:00:00+08:00"
            )
            return httpx.Response(200, json=answer)

        finished = await query_refund_against(payment_id, "ref_9", handle)

        (request,) = requests
        assert request.method == "GET"
        assert request.url.path == f"{protocol.REFUND_QUERY_PATH_PREFIX}ref_9"
        assert dict(request.url.params) == {"app_id": APP_ID, "out_trade_no": payment_id}
        assert finished == VerifiedRefundNotification(
            notification_id="query:R2025030100007",
            refund_id="ref_9",
            payment_id=payment_id,
            channel_refund_id="R2025030100007",
            amount_minor=250,
            currency="CNY",
            succeeded=True,
            finished_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        )

    async def test_a_failed_refund_reads_as_failed(self) -> None:
        payment_id = random_payment_id()
        answer = refund_query_answer(
            payment_id,
            "ref_9",
            "REFUND_FAIL",
            gmt_refund="2025-03-01T12:00:00+00:00",
            fail_reason="account closed",
        )

        finished = await query_refund_against(
            payment_id, "ref_9", lambda _r: httpx.Response(200, json=answer)
        )

        assert finished is not None
        assert not finished.succeeded
        assert (finished.failure_code, finished.failure_message) == (
            "refund_failed",
            "account closed",
        )

    async def test_a_processing_refund_is_none(self) -> None:
        payment_id = random_payment_id()
        answer = refund_query_answer(payment_id, "ref_9", "REFUND_PROCESSING")

        assert (
            await query_refund_against(
                payment_id, "ref_9", lambda _r: httpx.Response(200, json=answer)
            )
            is None
        )

    async def test_a_signed_unknown_refund_is_none(self) -> None:
        refusal = signed_refusal("REFUND_NOT_EXIST", "no such refund")

        assert (
            await query_refund_against(
                random_payment_id(), "ref_9", lambda _r: httpx.Response(200, json=refusal)
            )
            is None
        )

    @pytest.mark.parametrize(
        "answer",
        [
            lambda pid: {**refund_query_answer(pid, "ref_9", "REFUND_SUCCESS"), "sign": "0" * 64},
            lambda pid: refund_query_answer(pid, "ref_other", "REFUND_SUCCESS"),
            lambda pid: refund_query_answer("pay_other", "ref_9", "REFUND_SUCCESS"),
            lambda pid: refund_query_answer(pid, "ref_9", "REFUND_SUCCESS"),  # no gmt_refund
            lambda pid: refund_query_answer(
                pid, "ref_9", "REFUND_FAIL", gmt_refund="2025-03-01T12:00:00+00:00"
            ),  # no fail_reason
            lambda pid: refund_query_answer(
                pid, "ref_9", "REFUND_MAYBE", gmt_refund="2025-03-01T12:00:00+00:00"
            ),
            lambda pid: {"code": "40004", "sub_code": "REFUND_NOT_EXIST"},  # unsigned
            lambda pid: signed_refusal("INVALID_PARAMETER", "out_trade_no is missing"),
        ],
    )
    async def test_an_answer_that_proves_nothing_is_unavailable(
        self, answer: Callable[[str], dict[str, str]]
    ) -> None:
        payment_id = random_payment_id()
        with pytest.raises(ChannelUnavailable):
            await query_refund_against(
                payment_id, "ref_9", lambda _r: httpx.Response(200, json=answer(payment_id))
            )

    async def test_a_connection_error_is_unavailable(self) -> None:
        def handle(_request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused")

        with pytest.raises(ChannelUnavailable):
            await query_refund_against(random_payment_id(), "ref_9", handle)
