"""The WeChat-Pay-style protocol and the adapter's checks. Pure and fast.

Notifications are built here from the protocol's primitives, so every field can be
tampered with; the adapter's answer handling runs against httpx's in-memory transport.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.common.invariant import InvariantViolation
from services.gateway.channels import alipay
from services.gateway.channels import wechat_pay_protocol as protocol
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    InvalidNotification,
    PreparedTrade,
    RefundAccepted,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from services.gateway.channels.wechat_pay import (
    NOTIFICATION_BYTES_MAX,
    REJECTION_CODE_TRADE_ALREADY_PAID,
    WeChatPayChannel,
)

KEY = "unit-test-api-v3-key-of-32-bytes"
OTHER_KEY = "another-api-v3-key-of-32-bytes!!"
MCH_ID = "1900000109"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
AGE_MAX_S = 300
PSP_URL = "http://psp.invalid"
TRANSACTION_ID = "4200202503010000000000000042"
REFUND_ID = "50302025030100000000000000042"


class FrozenClock:
    def now(self) -> datetime:
        return NOW


def random_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex}"


def make_channel(
    http_client: httpx.AsyncClient, *, api_v3_key: str = KEY, mch_id: str = MCH_ID
) -> WeChatPayChannel:
    return WeChatPayChannel(
        base_url=PSP_URL,
        mch_id=mch_id,
        api_v3_key=api_v3_key,
        notify_url="http://gateway.invalid/notify",
        http_client=http_client,
        notification_age_max_s=AGE_MAX_S,
        clock=FrozenClock(),
    )


@pytest.fixture
async def channel() -> AsyncIterator[WeChatPayChannel]:
    # read_notification never sends; the client only satisfies the constructor.
    async with httpx.AsyncClient() as http_client:
        yield make_channel(http_client)


def transaction(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "mchid": MCH_ID,
        "out_trade_no": "pay_0123456789abcdef",
        "transaction_id": TRANSACTION_ID,
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "success_time": "2025-03-01T19:59:30+08:00",
        "amount": {"total": 1050, "currency": "CNY"},
    }
    fields.update(overrides)
    return fields


def refund(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "mchid": MCH_ID,
        "refund_id": REFUND_ID,
        "out_refund_no": "ref_0123456789abcdef",
        "transaction_id": TRANSACTION_ID,
        "out_trade_no": "pay_0123456789abcdef",
        "refund_status": "SUCCESS",
        "create_time": "2025-03-01T19:59:00+08:00",
        "success_time": "2025-03-01T19:59:40+08:00",
        "amount": {"refund": 300, "total": 1050, "currency": "CNY"},
    }
    fields.update(overrides)
    return fields


def envelope(
    resource: dict[str, object],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    original_type: str = "transaction",
    key: str = KEY,
    nonce: str = "0123456789ab",
    resource_overrides: dict[str, object] | None = None,
    envelope_overrides: dict[str, object] | None = None,
) -> bytes:
    """A notification body whose resource is encrypted under `key`; overrides apply last."""
    ciphertext = protocol.encrypt_resource(
        protocol.dumps(resource), nonce=nonce, associated_data=original_type, api_v3_key=key
    )
    fields: dict[str, object] = {
        "id": "EV-2025030112000000000001",
        "create_time": "2025-03-01T19:59:30+08:00",
        "event_type": event_type,
        "resource_type": "encrypt-resource",
        "summary": "payment succeeded",
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": nonce,
            **(resource_overrides or {}),
        },
    }
    fields.update(envelope_overrides or {})
    return protocol.dumps(fields)


def signed_headers(
    body: bytes,
    *,
    timestamp_s: int = NOW_S,
    key: str = KEY,
    serial: str = protocol.SIGNATURE_SERIAL,
) -> dict[str, str]:
    """Lowercase signature headers of `body`, as the gateway hands them over."""
    timestamp = str(timestamp_s)
    nonce = uuid.uuid4().hex
    return {
        "wechatpay-timestamp": timestamp,
        "wechatpay-nonce": nonce,
        "wechatpay-signature": protocol.sign(protocol.answer_message(timestamp, nonce, body), key),
        "wechatpay-serial": serial,
        "content-type": "application/json",
    }


def refused_reason(channel: WeChatPayChannel, body: bytes, headers: dict[str, str]) -> str:
    with pytest.raises(InvalidNotification) as raised:
        channel.read_notification(body, headers, now=NOW)
    return raised.value.reason


class TestSignAndVerify:
    METHOD = "GET"
    PATH = "/wechatpay/v3/pay/transactions/out-trade-no/pay_1?mchid=1900000109"

    def message(self, **overrides: str) -> bytes:
        parts = {
            "method": self.METHOD,
            "path": self.PATH,
            "timestamp": "1700000000",
            "nonce": "abc123",
            "body": "",
        }
        parts.update(overrides)
        return protocol.request_message(
            parts["method"],
            parts["path"],
            parts["timestamp"],
            parts["nonce"],
            parts["body"].encode(),
        )

    def test_matches_an_independently_computed_signature(self) -> None:
        # printf 'GET\n<path>\n1700000000\nabc123\n\n' | openssl dgst -sha256 -hmac <key> -binary
        expected = "8lD+IKiQvd9whqSngtyIaIbYXkUEtURYHsf34xnAuVI="

        assert protocol.sign(self.message(), "0123456789abcdef0123456789abcdef") == expected

    def test_round_trip(self) -> None:
        signature = protocol.sign(self.message(body='{"a":1}'), KEY)

        assert protocol.verify(self.message(body='{"a":1}'), signature, KEY)

    @pytest.mark.parametrize(
        "tampered",
        [
            {"method": "POST"},
            {"path": "/wechatpay/v3/pay/transactions/out-trade-no/pay_2?mchid=1900000109"},
            {"path": "/wechatpay/v3/pay/transactions/out-trade-no/pay_1?mchid=1900000110"},
            {"timestamp": "1700000001"},
            {"nonce": "abc124"},
            {"body": '{"a":2}'},
        ],
    )
    def test_tampering_with_any_part_fails(self, tampered: dict[str, str]) -> None:
        signature = protocol.sign(self.message(body='{"a":1}'), KEY)

        assert not protocol.verify(self.message(**{"body": '{"a":1}', **tampered}), signature, KEY)

    def test_another_key_fails(self) -> None:
        signature = protocol.sign(self.message(), KEY)

        assert not protocol.verify(self.message(), signature, OTHER_KEY)

    def test_an_empty_or_non_ascii_signature_fails_without_raising(self) -> None:
        assert not protocol.verify(self.message(), "", KEY)
        assert not protocol.verify(self.message(), "é" * 44, KEY)

    def test_answer_messages_bind_timestamp_nonce_and_body(self) -> None:
        signature = protocol.sign(protocol.answer_message("1", "n", b"{}"), KEY)

        assert protocol.verify(protocol.answer_message("1", "n", b"{}"), signature, KEY)
        assert not protocol.verify(protocol.answer_message("2", "n", b"{}"), signature, KEY)
        assert not protocol.verify(protocol.answer_message("1", "m", b"{}"), signature, KEY)
        assert not protocol.verify(protocol.answer_message("1", "n", b"{ }"), signature, KEY)


class TestAuthorization:
    def test_round_trip(self) -> None:
        value = protocol.authorization(MCH_ID, "nonce1", "1700000000", "c2ln")

        assert value == (
            'WECHATPAY2-HMAC-SHA256 mchid="1900000109",nonce_str="nonce1",'
            'timestamp="1700000000",signature="c2ln"'
        )
        assert protocol.parse_authorization(value) == protocol.Authorization(
            mch_id=MCH_ID, nonce="nonce1", timestamp="1700000000", signature="c2ln"
        )

    @pytest.mark.parametrize(
        "value",
        [
            "",
            'WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="1",signature="s"',
            'WECHATPAY2-HMAC-SHA256 mchid="1",nonce_str="n",timestamp="1"',
            'WECHATPAY2-HMAC-SHA256 mchid="1",nonce_str="n",timestamp="1",signature="s",x="y"',
            'WECHATPAY2-HMAC-SHA256 mchid="1",mchid="2",nonce_str="n",timestamp="1"',
            'WECHATPAY2-HMAC-SHA256 mchid="1", nonce_str="n",timestamp="1",signature="s"',
            "WECHATPAY2-HMAC-SHA256 mchid=1,nonce_str=n,timestamp=1,signature=s",
            "WECHATPAY2-HMAC-SHA256",
            'WECHATPAY2-HMAC-SHA256 mchid="1",nonce_str="n",timestamp="1",signature="'
            + "s" * 1024
            + '"',
        ],
    )
    def test_refuses_a_malformed_header(self, value: str) -> None:
        assert protocol.parse_authorization(value) is None


class TestResourceEncryption:
    def test_round_trip(self) -> None:
        ciphertext = protocol.encrypt_resource(
            b'{"a":1}', nonce="0123456789ab", associated_data="transaction", api_v3_key=KEY
        )

        plaintext = protocol.decrypt_resource(
            ciphertext, nonce="0123456789ab", associated_data="transaction", api_v3_key=KEY
        )

        assert plaintext == b'{"a":1}'
        assert b'"a"' not in base64.b64decode(ciphertext)

    @pytest.mark.parametrize(
        "tampered",
        [
            {"nonce": "0123456789ac"},
            {"associated_data": "refund"},
            {"api_v3_key": OTHER_KEY},
            {"nonce": "short"},
        ],
    )
    def test_tampered_inputs_do_not_decrypt(self, tampered: dict[str, str]) -> None:
        ciphertext = protocol.encrypt_resource(
            b'{"a":1}', nonce="0123456789ab", associated_data="transaction", api_v3_key=KEY
        )
        arguments = {
            "nonce": "0123456789ab",
            "associated_data": "transaction",
            "api_v3_key": KEY,
            **tampered,
        }

        with pytest.raises(protocol.UndecryptableResource):
            protocol.decrypt_resource(ciphertext, **arguments)

    def test_a_flipped_ciphertext_bit_does_not_decrypt(self) -> None:
        sealed = bytearray(
            base64.b64decode(
                protocol.encrypt_resource(
                    b'{"a":1}', nonce="0123456789ab", associated_data="refund", api_v3_key=KEY
                )
            )
        )
        sealed[0] ^= 1

        with pytest.raises(protocol.UndecryptableResource):
            protocol.decrypt_resource(
                base64.b64encode(sealed).decode(),
                nonce="0123456789ab",
                associated_data="refund",
                api_v3_key=KEY,
            )

    @pytest.mark.parametrize("ciphertext", ["not base64!", "é", ""])
    def test_garbage_does_not_decrypt(self, ciphertext: str) -> None:
        with pytest.raises(protocol.UndecryptableResource):
            protocol.decrypt_resource(
                ciphertext, nonce="0123456789ab", associated_data="refund", api_v3_key=KEY
            )

    def test_a_key_of_the_wrong_length_is_refused(self) -> None:
        with pytest.raises(ValueError, match="32 bytes"):
            protocol.encrypt_resource(b"", nonce="0123456789ab", associated_data="", api_v3_key="k")


class TestJson:
    @pytest.mark.parametrize(
        "data", [b'{"a":1,"a":2}', b'{"a":NaN}', b'{"a":Infinity}', b"[1]", b"1", b"{"]
    )
    def test_refuses_ambiguous_or_non_object_json(self, data: bytes) -> None:
        with pytest.raises(ValueError):
            protocol.loads_object(data)

    def test_dumps_is_compact_utf8(self) -> None:
        assert protocol.dumps({"a": "微信", "b": [1, 2]}) == '{"a":"微信","b":[1,2]}'.encode()

    def test_format_time_is_china_standard_time(self) -> None:
        assert protocol.format_time(NOW) == "2025-03-01T20:00:00+08:00"

    def test_format_time_refuses_a_naive_time(self) -> None:
        with pytest.raises(ValueError):
            protocol.format_time(datetime(2025, 3, 1, 12, 0, 0))  # noqa: DTZ001


class TestReadPaymentNotification:
    def test_accepts_a_valid_notification(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction())

        verified = channel.read_notification(body, signed_headers(body), now=NOW)

        assert verified == VerifiedPaymentNotification(
            notification_id="EV-2025030112000000000001",
            channel_trade_id=TRANSACTION_ID,
            payment_id="pay_0123456789abcdef",
            amount_minor=1050,
            currency="CNY",
            paid_at=datetime(2025, 3, 1, 11, 59, 30, tzinfo=UTC),
        )
        assert isinstance(verified, VerifiedPaymentNotification)
        assert verified.paid_at.utcoffset() == timedelta(0)

    def test_an_earlier_trade_state_is_ignored_not_refused(self, channel: WeChatPayChannel) -> None:
        resource = transaction(trade_state="USERPAYING")
        del resource["success_time"]
        body = envelope(resource, event_type="TRANSACTION.USERPAYING")

        result = channel.read_notification(body, signed_headers(body), now=NOW)

        assert result == IgnoredNotification(
            notification_id="EV-2025030112000000000001", reason="earlier_trade_state"
        )

    def test_an_earlier_state_must_still_be_genuine(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(trade_state="USERPAYING"), event_type="TRANSACTION.USERPAYING")

        assert refused_reason(channel, body, signed_headers(body, key=OTHER_KEY)) == (
            "bad_signature"
        )

    def test_accepts_a_notification_exactly_at_the_age_limit(
        self, channel: WeChatPayChannel
    ) -> None:
        body = envelope(transaction())
        headers = signed_headers(body, timestamp_s=NOW_S - AGE_MAX_S)

        assert isinstance(
            channel.read_notification(body, headers, now=NOW), VerifiedPaymentNotification
        )

    def test_tolerates_a_little_clock_skew(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction())
        headers = signed_headers(body, timestamp_s=NOW_S + 300)

        assert isinstance(
            channel.read_notification(body, headers, now=NOW), VerifiedPaymentNotification
        )

    @pytest.mark.parametrize(
        ("timestamp_s", "reason"), [(NOW_S - AGE_MAX_S - 1, "stale"), (NOW_S + 301, "from_future")]
    )
    def test_refuses_a_notification_out_of_its_time_window(
        self, channel: WeChatPayChannel, timestamp_s: int, reason: str
    ) -> None:
        body = envelope(transaction())

        assert refused_reason(channel, body, signed_headers(body, timestamp_s=timestamp_s)) == (
            reason
        )

    @pytest.mark.parametrize(
        "header",
        ["wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial"],
    )
    def test_refuses_a_missing_header(self, channel: WeChatPayChannel, header: str) -> None:
        body = envelope(transaction())
        headers = signed_headers(body)
        del headers[header]

        assert refused_reason(channel, body, headers) == "missing_field"

    def test_refuses_an_unknown_serial(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction())

        assert refused_reason(channel, body, signed_headers(body, serial="OTHER")) == (
            "unknown_serial"
        )

    def test_refuses_a_malformed_timestamp(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction())
        headers = {**signed_headers(body), "wechatpay-timestamp": "-1"}

        assert refused_reason(channel, body, headers) == "invalid_timestamp"

    def test_refuses_a_signature_made_with_another_key(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction())

        assert refused_reason(channel, body, signed_headers(body, key=OTHER_KEY)) == (
            "bad_signature"
        )

    @pytest.mark.parametrize("header", ["wechatpay-timestamp", "wechatpay-nonce"])
    def test_refuses_tampered_signed_headers(self, channel: WeChatPayChannel, header: str) -> None:
        body = envelope(transaction())
        headers = signed_headers(body)
        headers[header] = headers[header][:-1] + ("0" if headers[header][-1] != "0" else "1")

        assert refused_reason(channel, body, headers) == "bad_signature"

    def test_refuses_a_tampered_body(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction())
        headers = signed_headers(body)
        tampered = body.replace(b"EV-2025030112000000000001", b"EV-2025030112000000000002")

        assert refused_reason(channel, tampered, headers) == "bad_signature"

    def test_refuses_a_body_that_is_too_large(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(), envelope_overrides={"summary": "x" * NOTIFICATION_BYTES_MAX})

        assert refused_reason(channel, body, signed_headers(body)) == "too_large"

    def test_refuses_a_signed_body_that_is_not_json(self, channel: WeChatPayChannel) -> None:
        body = b"trade_status=TRADE_SUCCESS"

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_body"

    @pytest.mark.parametrize("missing", ["id", "create_time", "event_type", "resource_type"])
    def test_refuses_a_missing_envelope_field(
        self, channel: WeChatPayChannel, missing: str
    ) -> None:
        body = envelope(transaction(), envelope_overrides={missing: None})

        assert refused_reason(channel, body, signed_headers(body)) == "missing_field"

    @pytest.mark.parametrize(
        "missing", ["original_type", "algorithm", "ciphertext", "associated_data", "nonce"]
    )
    def test_refuses_a_missing_resource_field(
        self, channel: WeChatPayChannel, missing: str
    ) -> None:
        body = envelope(transaction(), resource_overrides={missing: ""})

        assert refused_reason(channel, body, signed_headers(body)) == "missing_field"

    def test_refuses_a_plain_resource(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(), envelope_overrides={"resource_type": "plain-resource"})

        assert refused_reason(channel, body, signed_headers(body)) == "unsupported_resource_type"

    def test_refuses_another_algorithm(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(), resource_overrides={"algorithm": "AEAD_SM4_GCM"})

        assert refused_reason(channel, body, signed_headers(body)) == "unsupported_algorithm"

    def test_refuses_a_resource_encrypted_with_another_key(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(), key=OTHER_KEY)

        assert refused_reason(channel, body, signed_headers(body)) == "undecryptable"

    def test_refuses_a_resource_swapped_between_types(self, channel: WeChatPayChannel) -> None:
        # The associated data binds the ciphertext to its original type.
        body = envelope(
            transaction(),
            resource_overrides={"original_type": "refund", "associated_data": "refund"},
        )

        assert refused_reason(channel, body, signed_headers(body)) == "undecryptable"

    def test_refuses_another_merchant(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(mchid="1900000110"))

        assert refused_reason(channel, body, signed_headers(body)) == "wrong_mchid"

    def test_refuses_an_unknown_event_type(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(), event_type="TRANSACTION.REVOKED")

        assert refused_reason(channel, body, signed_headers(body)) == "unexpected_event_type"

    def test_refuses_a_trade_state_that_contradicts_the_event(
        self, channel: WeChatPayChannel
    ) -> None:
        body = envelope(transaction(trade_state="NOTPAY"))

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_field"

    @pytest.mark.parametrize("missing", ["transaction_id", "out_trade_no", "success_time"])
    def test_refuses_a_missing_resource_field_of_a_payment(
        self, channel: WeChatPayChannel, missing: str
    ) -> None:
        resource = transaction()
        del resource[missing]
        body = envelope(resource)

        assert refused_reason(channel, body, signed_headers(body)) == "missing_field"

    @pytest.mark.parametrize("total", [0, -1, 10.5, "1050", True, 10**18, None], ids=repr)
    def test_refuses_an_amount_that_is_not_a_positive_integer(
        self, channel: WeChatPayChannel, total: object
    ) -> None:
        body = envelope(transaction(amount={"total": total, "currency": "CNY"}))
        expected = "missing_field" if total is None else "invalid_amount"

        assert refused_reason(channel, body, signed_headers(body)) == expected

    @pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", 156])
    def test_refuses_a_malformed_currency(
        self, channel: WeChatPayChannel, currency: object
    ) -> None:
        body = envelope(transaction(amount={"total": 1050, "currency": currency}))

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_currency"

    @pytest.mark.parametrize(
        "success_time", ["2025-03-01T19:59:30", "yesterday", "2" * 65, 1740830370]
    )
    def test_refuses_a_naive_or_malformed_time(
        self, channel: WeChatPayChannel, success_time: object
    ) -> None:
        body = envelope(transaction(success_time=success_time))

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_time"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"transaction_id": "4" * 129},
            {"out_trade_no": "../pay"},
            {"out_trade_no": 42},
            {"trade_state": "PAID"},
            {"amount": [1050, "CNY"]},
        ],
        ids=repr,
    )
    def test_refuses_a_malformed_field(
        self, channel: WeChatPayChannel, overrides: dict[str, object]
    ) -> None:
        body = envelope(transaction(**overrides))

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_field"

    def test_refuses_an_overlong_notification_id(self, channel: WeChatPayChannel) -> None:
        body = envelope(transaction(), envelope_overrides={"id": "E" * 129})

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_field"


class TestReadRefundNotification:
    def test_accepts_a_successful_refund(self, channel: WeChatPayChannel) -> None:
        body = envelope(refund(), event_type="REFUND.SUCCESS", original_type="refund")

        verified = channel.read_notification(body, signed_headers(body), now=NOW)

        assert verified == VerifiedRefundNotification(
            notification_id="EV-2025030112000000000001",
            refund_id="ref_0123456789abcdef",
            payment_id="pay_0123456789abcdef",
            channel_refund_id=REFUND_ID,
            amount_minor=300,
            currency="CNY",
            succeeded=True,
            finished_at=datetime(2025, 3, 1, 11, 59, 40, tzinfo=UTC),
        )

    def test_accepts_an_abnormal_refund_as_failed(self, channel: WeChatPayChannel) -> None:
        resource = refund(refund_status="ABNORMAL", abnormal_time="2025-03-01T19:59:45+08:00")
        del resource["success_time"]
        body = envelope(resource, event_type="REFUND.ABNORMAL", original_type="refund")

        verified = channel.read_notification(body, signed_headers(body), now=NOW)

        assert isinstance(verified, VerifiedRefundNotification)
        assert not verified.succeeded
        assert verified.failure_code == "refund_abnormal"
        assert verified.failure_message != ""
        assert verified.finished_at == datetime(2025, 3, 1, 11, 59, 45, tzinfo=UTC)

    def test_refuses_a_status_that_contradicts_the_event(self, channel: WeChatPayChannel) -> None:
        body = envelope(refund(), event_type="REFUND.ABNORMAL", original_type="refund")

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_field"

    def test_refuses_a_refund_resource_under_a_payment_event(
        self, channel: WeChatPayChannel
    ) -> None:
        body = envelope(refund(), event_type="TRANSACTION.SUCCESS", original_type="refund")

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_field"

    def test_refuses_another_merchant(self, channel: WeChatPayChannel) -> None:
        body = envelope(
            refund(mchid="someone"), event_type="REFUND.SUCCESS", original_type="refund"
        )

        assert refused_reason(channel, body, signed_headers(body)) == "wrong_mchid"

    @pytest.mark.parametrize("missing", ["refund_id", "out_refund_no", "success_time", "amount"])
    def test_refuses_a_missing_field(self, channel: WeChatPayChannel, missing: str) -> None:
        resource = refund()
        del resource[missing]
        body = envelope(resource, event_type="REFUND.SUCCESS", original_type="refund")

        assert refused_reason(channel, body, signed_headers(body)) == "missing_field"

    def test_refuses_a_refund_of_nothing(self, channel: WeChatPayChannel) -> None:
        resource = refund(amount={"refund": 0, "total": 1050, "currency": "CNY"})
        body = envelope(resource, event_type="REFUND.SUCCESS", original_type="refund")

        assert refused_reason(channel, body, signed_headers(body)) == "invalid_amount"


class TestNotificationAnswer:
    def test_accepted_is_an_empty_2xx(self, channel: WeChatPayChannel) -> None:
        answer = channel.notification_answer(accepted=True)

        assert 200 <= answer.status_code < 300
        assert answer.body == ""

    def test_refused_asks_for_a_retry(self, channel: WeChatPayChannel) -> None:
        answer = channel.notification_answer(accepted=False)

        assert answer.status_code == 500
        assert answer.media_type == "application/json"
        assert json.loads(answer.body)["code"] == "FAIL"


def test_the_adapter_is_a_channel_adapter(channel: WeChatPayChannel) -> None:
    # mypy checks the assignment against the Protocol's signatures.
    adapter: ChannelAdapter = channel

    assert adapter is channel


def test_the_already_paid_code_is_the_one_every_adapter_uses() -> None:
    assert REJECTION_CODE_TRADE_ALREADY_PAID == alipay.REJECTION_CODE_TRADE_ALREADY_PAID


async def test_an_api_v3_key_of_the_wrong_length_is_a_programming_error() -> None:
    async with httpx.AsyncClient() as http_client:
        with pytest.raises(InvariantViolation):
            make_channel(http_client, api_v3_key="short")


Handler = Callable[[httpx.Request], httpx.Response]


def signed_response(
    status_code: int,
    payload: dict[str, object] | None,
    *,
    key: str = KEY,
    timestamp_s: int = NOW_S,
) -> httpx.Response:
    body = b"" if payload is None else protocol.dumps(payload)
    timestamp = str(timestamp_s)
    nonce = uuid.uuid4().hex
    headers = {
        protocol.HEADER_TIMESTAMP: timestamp,
        protocol.HEADER_NONCE: nonce,
        protocol.HEADER_SIGNATURE: protocol.sign(
            protocol.answer_message(timestamp, nonce, body), key
        ),
        protocol.HEADER_SERIAL: protocol.SIGNATURE_SERIAL,
    }
    return httpx.Response(status_code, content=body, headers=headers)


def check_request_signature(request: httpx.Request) -> None:
    parsed = protocol.parse_authorization(request.headers["authorization"])
    assert parsed is not None
    assert parsed.mch_id == MCH_ID
    assert parsed.timestamp == str(NOW_S)
    message = protocol.request_message(
        request.method,
        request.url.raw_path.decode(),
        parsed.timestamp,
        parsed.nonce,
        request.content,
    )
    assert protocol.verify(message, parsed.signature, KEY)


@pytest.fixture
async def answering() -> AsyncIterator[Callable[[Handler], WeChatPayChannel]]:
    """Build an adapter whose PSP is `handler`; every request's signature is checked."""
    clients: list[httpx.AsyncClient] = []

    def build(handler: Handler) -> WeChatPayChannel:
        def checked(request: httpx.Request) -> httpx.Response:
            check_request_signature(request)
            return handler(request)

        client = httpx.AsyncClient(transport=httpx.MockTransport(checked))
        clients.append(client)
        return make_channel(client)

    yield build
    for client in clients:
        await client.aclose()


def native_answer(payment_id: str) -> dict[str, object]:
    return {
        "code_url": "weixin://wxpay/bizpayurl?pr=token",
        "h5_url": f"{PSP_URL}/wx/pay/token",
        "transaction_id": TRANSACTION_ID,
        "out_trade_no": payment_id,
    }


class TestAnswers:
    async def test_prepare_signs_the_request_and_reads_a_signed_answer(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        payment_id = random_payment_id()
        sent: list[dict[str, object]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(json.loads(request.content))
            return signed_response(200, native_answer(payment_id))

        channel = answering(handler)

        prepared = await channel.prepare(
            payment_id=payment_id, amount_minor=1050, currency="CNY", description=" Order "
        )

        assert prepared == PreparedTrade(
            channel_trade_id=TRANSACTION_ID,
            pay_url=f"{PSP_URL}/wx/pay/token",
            qr_code="weixin://wxpay/bizpayurl?pr=token",
        )
        assert sent[0]["amount"] == {"total": 1050, "currency": "CNY"}
        assert sent[0]["description"] == "Order"
        assert sent[0]["mchid"] == MCH_ID

    @pytest.mark.parametrize(
        "response",
        [
            lambda: httpx.Response(200, json={"transaction_id": TRANSACTION_ID}),
            lambda: signed_response(200, {"transaction_id": TRANSACTION_ID}, key=OTHER_KEY),
            lambda: signed_response(200, {"transaction_id": TRANSACTION_ID}, timestamp_s=0),
            lambda: httpx.Response(401, json={"code": "SIGN_ERROR", "message": "no"}),
            lambda: signed_response(401, {"code": "SIGN_ERROR", "message": "no"}),
            lambda: httpx.Response(503, json={"detail": "down"}),
            lambda: signed_response(429, {"code": "FREQUENCY_LIMITED", "message": "slow"}),
            lambda: signed_response(400, {"message": "no code"}),
            lambda: signed_response(200, {"transaction_id": TRANSACTION_ID}),
            lambda: signed_response(200, {"x": "y" * protocol.BODY_BYTES_MAX}),
        ],
        ids=[
            "unsigned",
            "other key",
            "stale",
            "unsigned 401",
            "signed 401",
            "503",
            "429",
            "no code",
            "incomplete",
            "too large",
        ],
    )
    async def test_an_unverifiable_or_inconclusive_answer_is_unavailable(
        self,
        answering: Callable[[Handler], WeChatPayChannel],
        response: Callable[[], httpx.Response],
    ) -> None:
        channel = answering(lambda _request: response())

        with pytest.raises(ChannelUnavailable):
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=1, currency="CNY", description=""
            )

    async def test_an_answer_about_another_trade_is_unavailable(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        channel = answering(lambda _request: signed_response(200, native_answer("pay_other")))

        with pytest.raises(ChannelUnavailable):
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=1, currency="CNY", description=""
            )

    async def test_a_signed_refusal_is_rejected_with_its_lowercased_code(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        channel = answering(
            lambda _request: signed_response(403, {"code": "TRADE_ERROR", "message": "declined"})
        )

        with pytest.raises(ChannelRejected) as raised:
            await channel.prepare(
                payment_id=random_payment_id(), amount_minor=1, currency="CNY", description=""
            )

        assert (raised.value.code, raised.value.message) == ("trade_error", "declined")

    async def test_a_payment_id_that_cannot_be_a_path_segment_is_rejected_unsent(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        def handler(_request: httpx.Request) -> httpx.Response:
            raise AssertionError("nothing may be sent")

        channel = answering(handler)

        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id="../refunds")

        assert raised.value.code == "param_error"
        assert await channel.query(payment_id="../refunds") is None

    async def test_close_maps_orderpaid_and_accepts_an_unknown_trade(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        answers = iter(
            [
                signed_response(400, {"code": "ORDERPAID", "message": "paid"}),
                signed_response(404, {"code": "ORDER_NOT_EXIST", "message": "none"}),
                signed_response(204, None),
            ]
        )
        channel = answering(lambda _request: next(answers))

        with pytest.raises(ChannelRejected) as raised:
            await channel.close(payment_id=random_payment_id())
        await channel.close(payment_id=random_payment_id())
        await channel.close(payment_id=random_payment_id())

        assert raised.value.code == "trade_already_paid"

    async def test_refund_sends_the_trade_total_and_maps_not_enough(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        payment_id = random_payment_id()
        sent: list[dict[str, object]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            if request.method == "GET":
                return signed_response(200, transaction(out_trade_no=payment_id))
            sent.append(json.loads(request.content))
            if len(sent) == 1:
                return signed_response(
                    200,
                    {"refund_id": REFUND_ID, "out_refund_no": "ref_1", "status": "PROCESSING"},
                )
            return signed_response(400, {"code": "NOT_ENOUGH", "message": "too much"})

        channel = answering(handler)

        accepted = await channel.refund(
            payment_id=payment_id, refund_id="ref_1", amount_minor=300, currency="CNY", reason=""
        )
        with pytest.raises(ChannelRejected) as raised:
            await channel.refund(
                payment_id=payment_id,
                refund_id="ref_2",
                amount_minor=800,
                currency="CNY",
                reason="",
            )

        assert accepted == RefundAccepted(channel_refund_id=REFUND_ID)
        assert sent[0]["amount"] == {"refund": 300, "total": 1050, "currency": "CNY"}
        assert raised.value.code == "refund_exceeds_paid"

    async def test_query_of_an_unknown_trade_is_none(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        channel = answering(
            lambda _request: signed_response(404, {"code": "ORDER_NOT_EXIST", "message": "none"})
        )

        assert await channel.query(payment_id=random_payment_id()) is None

    async def test_query_of_a_refunded_trade_is_still_paid(
        self, answering: Callable[[Handler], WeChatPayChannel]
    ) -> None:
        payment_id = random_payment_id()
        channel = answering(
            lambda _request: signed_response(
                200, transaction(out_trade_no=payment_id, trade_state="REFUND")
            )
        )

        paid = await channel.query(payment_id=payment_id)

        assert paid is not None
        assert paid.notification_id == f"query:{TRANSACTION_ID}"
        assert paid.amount_minor == 1050
