"""The Alipay-style signing protocol and the adapter's checks. Pure and fast.

The adapter's answer handling runs against httpx's in-memory transport: no sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.gateway.channels import alipay_protocol as protocol
from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.base import (
    ChannelRejected,
    ChannelUnavailable,
    InvalidNotification,
    PreparedTrade,
    VerifiedPaymentNotification,
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
