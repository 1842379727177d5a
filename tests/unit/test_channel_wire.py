"""The channel adapters' shared wire toolkit (`services.gateway.channels.wire`). Pure and
fast: HTTP answers come from httpx's in-memory transport, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from services.gateway.channels import wire
from services.gateway.channels.base import ChannelRejected, ChannelUnavailable, InvalidNotification

LIMIT_BYTES = 16
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
AGE_MAX_S = 300
SKEW_MAX_S = 60


class CountingBody(httpx.AsyncByteStream):
    """A body sent in chunks, counting how many were asked for."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.chunk_count_read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.chunk_count_read += 1
            yield chunk


def streamed(body: bytes | CountingBody) -> httpx.Response:
    stream = body if isinstance(body, CountingBody) else CountingBody([body])
    return httpx.Response(200, stream=stream)


def invalid_reason(error: pytest.ExceptionInfo[InvalidNotification]) -> str:
    return error.value.reason


class TestReadAtMost:
    async def test_a_body_exactly_at_the_limit_is_read_whole(self) -> None:
        body = b"x" * LIMIT_BYTES

        assert await wire.read_at_most(streamed(body), LIMIT_BYTES) == body

    async def test_a_body_one_byte_over_the_limit_is_none(self) -> None:
        assert await wire.read_at_most(streamed(b"x" * (LIMIT_BYTES + 1)), LIMIT_BYTES) is None

    async def test_an_empty_body_is_empty(self) -> None:
        assert await wire.read_at_most(streamed(b""), LIMIT_BYTES) == b""

    async def test_reading_stops_at_the_chunk_that_passes_the_limit(self) -> None:
        body = CountingBody([b"x" * LIMIT_BYTES, b"y", b"z" * 1000, b"never read"])

        assert await wire.read_at_most(streamed(body), LIMIT_BYTES) is None
        assert body.chunk_count_read == 2


class TestBodyWithinLimit:
    def test_a_body_read_whole_is_returned(self) -> None:
        assert wire.body_within_limit(b"{}", what="psp answer") == b"{}"

    def test_a_body_over_the_limit_is_unavailable(self) -> None:
        with pytest.raises(ChannelUnavailable, match="psp answer is too large"):
            wire.body_within_limit(None, what="psp answer")


def client_answering(response: httpx.Response) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda _request: response))


async def send(http_client: httpx.AsyncClient, *, timeout_s: float = 5.0) -> wire.BoundedAnswer:
    request = http_client.build_request("GET", "http://psp.invalid/answer")
    return await wire.send_bounded(
        http_client, request, timeout_s=timeout_s, byte_count_max=LIMIT_BYTES, peer="psp"
    )


class TestSendBounded:
    async def test_returns_the_status_headers_and_body_of_the_answer(self) -> None:
        response = httpx.Response(422, content=b"x" * LIMIT_BYTES, headers={"x-answer": "yes"})
        async with client_answering(response) as http_client:
            answer = await send(http_client)

        assert answer.status_code == 422
        assert answer.headers["x-answer"] == "yes"
        assert answer.content == b"x" * LIMIT_BYTES

    async def test_a_body_one_byte_over_the_limit_has_no_content(self) -> None:
        response = httpx.Response(200, content=b"x" * (LIMIT_BYTES + 1))
        async with client_answering(response) as http_client:
            answer = await send(http_client)

        assert answer.status_code == 200
        assert answer.content is None

    async def test_a_connection_error_is_unavailable(self) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http_client:
            with pytest.raises(ChannelUnavailable, match="psp request failed: ConnectError"):
                await send(http_client)

    async def test_no_answer_within_the_timeout_is_unavailable(self) -> None:
        async def hang(_request: httpx.Request) -> httpx.Response:
            await asyncio.Event().wait()
            raise AssertionError("an event nobody sets was set")

        async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http_client:
            with pytest.raises(ChannelUnavailable, match=r"psp did not answer within 0\.01 s"):
                await send(http_client, timeout_s=0.01)

    async def test_redirects_are_not_followed(self) -> None:
        response = httpx.Response(302, headers={"location": "http://elsewhere.invalid/"})
        async with client_answering(response) as http_client:
            answer = await send(http_client)

        assert answer.status_code == 302


class TestJsonObject:
    def test_an_object_is_returned(self) -> None:
        assert wire.json_object(b'{"a": 1}') == {"a": 1}

    @pytest.mark.parametrize("content", [b"", b"not json", b"[1]", b'"text"', b"\xff\xfe"])
    def test_anything_else_is_none(self, content: bytes) -> None:
        assert wire.json_object(content) is None


class TestRequiredFields:
    def test_a_present_field_is_returned(self) -> None:
        assert wire.required_field({"id": 7}, "id") == 7

    @pytest.mark.parametrize("fields", [{}, {"id": None}, {"id": ""}])
    def test_an_absent_null_or_empty_field_is_missing(self, fields: dict[str, object]) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.required_field(fields, "id")

        assert invalid_reason(error) == "missing_field"
        assert error.value.detail == "id"

    def test_require_fields_names_every_missing_field(self) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.require_fields({"a": "1", "b": "", "d": None}, ("a", "b", "c", "d"))

        assert invalid_reason(error) == "missing_field"
        assert error.value.detail == "b, c, d"

    def test_require_fields_accepts_complete_fields(self) -> None:
        wire.require_fields({"a": "1", "b": 0}, ("a", "b"))

    def test_required_text_returns_a_string_up_to_its_length(self) -> None:
        assert wire.required_text({"name": "abcd"}, "name", length_max=4) == "abcd"

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            ({}, "missing_field"),
            ({"name": 12}, "invalid_field"),
            ({"name": "abcde"}, "invalid_field"),
        ],
    )
    def test_required_text_refuses(self, fields: dict[str, object], reason: str) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.required_text(fields, "name", length_max=4)

        assert invalid_reason(error) == reason


class TestAmounts:
    @pytest.mark.parametrize(("text", "amount_minor"), [("1", 1), ("1999", 1999)])
    def test_plain_digits_are_an_amount(self, text: str, amount_minor: int) -> None:
        assert wire.parse_amount_minor(text) == amount_minor

    def test_eighteen_digits_are_the_most(self) -> None:
        assert wire.parse_amount_minor("9" * 18) == wire.AMOUNT_MINOR_MAX

    @pytest.mark.parametrize(
        "text", ["", "0", "01", "-1", "+1", "1.0", "1e3", " 1", "1 ", "9" * 19, "\u0661\u0662"]
    )
    def test_anything_else_is_an_invalid_amount(self, text: str) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.parse_amount_minor(text)

        assert invalid_reason(error) == "invalid_amount"

    @pytest.mark.parametrize("value", [1, 1999, wire.AMOUNT_MINOR_MAX])
    def test_a_positive_integer_is_an_amount(self, value: object) -> None:
        assert wire.is_amount_minor(value)

    @pytest.mark.parametrize("value", [0, -1, True, 1.0, "1", None, wire.AMOUNT_MINOR_MAX + 1])
    def test_other_values_are_not_amounts(self, value: object) -> None:
        assert not wire.is_amount_minor(value)

    def test_the_maximum_is_the_callers(self) -> None:
        assert wire.is_amount_minor(100, amount_minor_max=100)
        assert not wire.is_amount_minor(101, amount_minor_max=100)


class TestCurrencies:
    def test_three_capital_letters_are_a_currency(self) -> None:
        assert wire.parse_currency("CNY") == "CNY"
        assert wire.is_currency_code("EUR")

    @pytest.mark.parametrize("value", ["cny", "CN", "CNYY", "C1Y", "", 978, None])
    def test_anything_else_is_not(self, value: object) -> None:
        assert not wire.is_currency_code(value)

    def test_parse_currency_refuses_an_invalid_code(self) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.parse_currency("eur")

        assert invalid_reason(error) == "invalid_currency"


class TestTimestamps:
    @pytest.mark.parametrize(
        "text",
        ["2025-03-01T20:00:00+08:00", "2025-03-01T12:00:00Z", "2025-03-01T12:00:00+00:00"],
    )
    def test_an_offset_timestamp_is_returned_in_utc(self, text: str) -> None:
        parsed = wire.parse_utc_timestamp(text, reason="invalid_time")

        assert parsed == NOW
        assert parsed.tzinfo is UTC

    @pytest.mark.parametrize("text", ["2025-03-01T12:00:00", "2025-03-01 12:00:00", "2025-03-01"])
    def test_a_naive_timestamp_is_refused(self, text: str) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.parse_utc_timestamp(text, reason="invalid_gmt_payment")

        assert invalid_reason(error) == "invalid_gmt_payment"
        assert "no UTC offset" in error.value.detail

    @pytest.mark.parametrize("text", ["", "yesterday", "2025-13-01T00:00:00+00:00"])
    def test_a_malformed_timestamp_is_refused(self, text: str) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.parse_utc_timestamp(text, reason="invalid_event_date")

        assert invalid_reason(error) == "invalid_event_date"

    def test_a_timestamp_longer_than_the_limit_is_refused_unparsed(self) -> None:
        text = "2025-03-01T12:00:00+00:00" + " " * wire.TIMESTAMP_LENGTH_MAX

        with pytest.raises(InvalidNotification) as error:
            wire.parse_utc_timestamp(text, reason="invalid_time")

        assert error.value.detail == "too long"

    def test_unix_seconds_are_parsed(self) -> None:
        assert wire.parse_unix_seconds(str(NOW_S), reason="invalid_timestamp") == NOW_S

    @pytest.mark.parametrize("text", ["", "-1", "1.5", " 1", "1" * 13, "abc"])
    def test_other_unix_seconds_are_refused(self, text: str) -> None:
        with pytest.raises(InvalidNotification) as error:
            wire.parse_unix_seconds(text, reason="invalid_notify_time")

        assert invalid_reason(error) == "invalid_notify_time"

    def test_the_age_of_a_unix_stamp_counts_whole_seconds(self) -> None:
        now = NOW + timedelta(microseconds=999_999)

        assert wire.unix_stamp_age_s(NOW_S - 10, now) == 10
        assert wire.unix_stamp_age_s(NOW_S + 10, now) == -10

    def test_the_age_does_not_depend_on_the_zone_of_now(self) -> None:
        now = NOW.astimezone(timezone(timedelta(hours=8)))

        assert wire.unix_stamp_age_s(NOW_S, now) == 0


def check_freshness(age_s: float) -> None:
    wire.check_freshness(
        age_s, age_max_s=AGE_MAX_S, future_skew_s_max=SKEW_MAX_S, stamp="notify_time 1"
    )


class TestFreshness:
    @pytest.mark.parametrize("age_s", [0, 1, AGE_MAX_S, -SKEW_MAX_S, AGE_MAX_S - 0.5])
    def test_a_notification_within_the_limits_is_fresh(self, age_s: float) -> None:
        check_freshness(age_s)

    @pytest.mark.parametrize("age_s", [AGE_MAX_S + 1, AGE_MAX_S + 0.001, 10**9])
    def test_an_older_notification_is_stale(self, age_s: float) -> None:
        with pytest.raises(InvalidNotification) as error:
            check_freshness(age_s)

        assert invalid_reason(error) == "stale"
        assert error.value.detail == f"notify_time 1 is older than {AGE_MAX_S} s"

    @pytest.mark.parametrize("age_s", [-SKEW_MAX_S - 1, -SKEW_MAX_S - 0.001, -(10**9)])
    def test_a_notification_further_ahead_is_from_the_future(self, age_s: float) -> None:
        with pytest.raises(InvalidNotification) as error:
            check_freshness(age_s)

        assert invalid_reason(error) == "from_future"
        assert error.value.detail == "notify_time 1 is ahead of now"

    def test_the_future_skew_defaults_to_five_minutes(self) -> None:
        wire.check_freshness(-300, age_max_s=AGE_MAX_S, stamp="eventDate")
        with pytest.raises(InvalidNotification):
            wire.check_freshness(-301, age_max_s=AGE_MAX_S, stamp="eventDate")

    def test_a_unix_stamp_is_judged_against_now(self) -> None:
        stale_s = NOW_S - AGE_MAX_S - 1

        with pytest.raises(InvalidNotification) as error:
            check_freshness(wire.unix_stamp_age_s(stale_s, NOW))

        assert invalid_reason(error) == "stale"


class TestText:
    def test_a_description_is_stripped(self) -> None:
        assert wire.trade_description("  Two coffees \n", "pay_1", length_max=64) == "Two coffees"

    @pytest.mark.parametrize("description", ["", "   "])
    def test_an_empty_description_names_the_payment(self, description: str) -> None:
        assert (
            wire.trade_description(description, "pay_1", length_max=64) == "payrail payment pay_1"
        )

    def test_a_long_description_is_cut(self) -> None:
        assert wire.trade_description("abcdef", "pay_1", length_max=4) == "abcd"
        assert wire.trade_description("", "pay_1", length_max=7) == "payrail"

    def test_a_description_at_the_limit_is_kept(self) -> None:
        assert wire.trade_description("abcd", "pay_1", length_max=4) == "abcd"

    def test_trimmed_strips_then_cuts(self) -> None:
        assert wire.trimmed("  damaged  ", length_max=4) == "dama"
        assert wire.trimmed("  ok  ", length_max=4) == "ok"

    def test_a_message_is_cut(self) -> None:
        assert wire.message_text("Insufficient Funds", length_max=12) == "Insufficient"

    @pytest.mark.parametrize("value", [None, 12, {"text": "no"}, ["no"]])
    def test_a_message_that_is_not_a_string_is_empty(self, value: object) -> None:
        assert wire.message_text(value, length_max=12) == ""


class TestStatuses:
    @pytest.mark.parametrize(
        ("status_code", "outcome"),
        [
            (200, wire.AnswerOutcome.SUCCEEDED),
            (202, wire.AnswerOutcome.SUCCEEDED),
            (400, wire.AnswerOutcome.REFUSED),
            (422, wire.AnswerOutcome.REFUSED),
            (302, wire.AnswerOutcome.UNKNOWN),
            (403, wire.AnswerOutcome.UNKNOWN),
            (409, wire.AnswerOutcome.UNKNOWN),
            (500, wire.AnswerOutcome.UNKNOWN),
            (503, wire.AnswerOutcome.UNKNOWN),
        ],
    )
    def test_a_status_is_classified_by_the_callers_tables(
        self, status_code: int, outcome: wire.AnswerOutcome
    ) -> None:
        assert wire.classify_status(status_code, refusal_statuses={400, 422}) is outcome

    def test_the_success_statuses_are_the_callers(self) -> None:
        assert (
            wire.classify_status(201, refusal_statuses={422}, success_statuses={200})
            is wire.AnswerOutcome.UNKNOWN
        )

    def test_client_errors_but_the_inconclusive_ones(self) -> None:
        statuses = wire.client_error_statuses(inconclusive={401, 429})

        assert 400 in statuses
        assert 499 in statuses
        assert 401 not in statuses
        assert 429 not in statuses
        assert 399 not in statuses
        assert 500 not in statuses

    def test_every_client_error_by_default(self) -> None:
        assert wire.client_error_statuses() == frozenset(range(400, 500))

    def test_an_unknown_outcome_names_the_peer_and_status(self) -> None:
        error = wire.unavailable_status("bank rail", 503)

        assert isinstance(error, ChannelUnavailable)
        assert str(error) == "bank rail answered HTTP 503"

    def test_a_rejection_renames_known_codes(self) -> None:
        error = wire.rejection(
            "ORDERPAID",
            "the order is paid",
            renamed_codes={"ORDERPAID": "trade_already_paid"},
            message_length_max=8,
        )

        assert isinstance(error, ChannelRejected)
        assert (error.code, error.message) == ("trade_already_paid", "the orde")

    def test_a_rejection_lowercases_other_codes(self) -> None:
        error = wire.rejection("INVALID_REQUEST", None, renamed_codes={}, message_length_max=8)

        assert (error.code, error.message) == ("invalid_request", "")
