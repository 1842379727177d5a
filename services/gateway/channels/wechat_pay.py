"""The WeChat Pay channel adapter: native-pay trades, refunds, queries and callbacks.

The same adapter talks to the real channel's HMAC variant and to payrail's PSP
simulator; only `base_url`, `mch_id` and `api_v3_key` differ. Every request is signed,
and every answer must carry a valid signature under the same APIv3 key before anything
in it is believed: an answer that does not verify leaves the outcome unknown
(ChannelUnavailable), never a refusal.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx

from services.common.clock import Clock, SystemClock
from services.common.invariant import InvariantViolation, invariant
from services.gateway.channels import wechat_pay_protocol as protocol
from services.gateway.channels import wire
from services.gateway.channels.base import (
    ChannelError,
    ChannelNotification,
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

# The stable ChannelRejected codes this adapter gives instead of the channel's own code
# lowercased. `trade_already_paid` is the code every adapter uses for "cannot close, the
# payer paid"; `trade_not_exist` matches the Alipay adapter's code for the same fact.
REJECTION_CODE_TRADE_ALREADY_PAID: Final = "trade_already_paid"
REJECTION_CODE_TRADE_NOT_EXIST: Final = "trade_not_exist"
REJECTION_CODE_TRADE_NOT_PAID: Final = "trade_not_paid"
REJECTION_CODE_REFUND_EXCEEDS_PAID: Final = "refund_exceeds_paid"
# A payment or refund id the channel cannot carry in a URL path is refused before sending.
REJECTION_CODE_PARAM_ERROR: Final = "param_error"
# VerifiedRefundNotification.failure_code of a refund the channel gave up on.
REFUND_FAILURE_CODE_ABNORMAL: Final = "refund_abnormal"
REFUND_FAILURE_CODE_CLOSED: Final = "refund_closed"
# IgnoredNotification.reason of an earlier trade state delivered after a later one.
IGNORED_REASON_EARLIER_TRADE_STATE: Final = "earlier_trade_state"

# A notification stamped further in the future than this is refused (see `wire`).
NOTIFICATION_FUTURE_SKEW_S_MAX: Final = wire.NOTIFICATION_FUTURE_SKEW_S_MAX
# The longest answer or notification body the adapter reads.
RESPONSE_BYTES_MAX: Final = protocol.BODY_BYTES_MAX
NOTIFICATION_BYTES_MAX: Final = protocol.BODY_BYTES_MAX
# Ids end up in contracts that cap them at 128 characters.
IDENTIFIER_LENGTH_MAX: Final = 128
# A rejection's message ends up in a Failure, whose message is capped at 1024 characters.
MESSAGE_LENGTH_MAX: Final = 512
ERROR_CODE_LENGTH_MAX: Final = 64
TIMESTAMP_LENGTH_MAX: Final = wire.TIMESTAMP_LENGTH_MAX
EVENT_TYPE_LENGTH_MAX: Final = 64

# Channel error codes (lowercased otherwise) that the adapter renames per operation.
_CLOSE_REJECTION_CODES: Final = {protocol.CODE_ORDERPAID: REJECTION_CODE_TRADE_ALREADY_PAID}
_REFUND_REJECTION_CODES: Final = {
    protocol.CODE_NOT_ENOUGH: REJECTION_CODE_REFUND_EXCEEDS_PAID,
    protocol.CODE_TRADE_NOT_PAID: REJECTION_CODE_TRADE_NOT_PAID,
    protocol.CODE_ORDER_NOT_EXIST: REJECTION_CODE_TRADE_NOT_EXIST,
}
_TRANSACTION_EVENTS_OF_EARLIER_STATES: Final = {
    protocol.EVENT_TRANSACTION_USERPAYING: frozenset({protocol.TRADE_STATE_USERPAYING}),
}
_REFUND_EVENT_STATUSES: Final = {
    protocol.EVENT_REFUND_SUCCESS: protocol.REFUND_STATUS_SUCCESS,
    protocol.EVENT_REFUND_ABNORMAL: protocol.REFUND_STATUS_ABNORMAL,
    protocol.EVENT_REFUND_CLOSED: protocol.REFUND_STATUS_CLOSED,
}
# 4xx statuses that say nothing final about the request: authentication (our key or our
# clock is off, fixable without changing the request), a timeout, a conflict with a request
# still in progress, a replay refused as too early, or rate limiting. The request may have
# been carried out all the same.
_INCONCLUSIVE_CLIENT_ERRORS: Final = frozenset({401, 408, 409, 425, 429})
# Every other 4xx is the channel's definite refusal of the request.
_DEFINITE_REFUSAL_STATUSES: Final = wire.client_error_statuses(
    inconclusive=_INCONCLUSIVE_CLIENT_ERRORS
)
_ERROR_CODE_CHARACTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True)
class _Answer:
    """A verified answer: its status and JSON object (empty for an empty body)."""

    status_code: int
    payload: dict[str, object]


@dataclass(frozen=True)
class _Transaction:
    """The checked fields of a transaction (query answer or notification resource)."""

    transaction_id: str
    out_trade_no: str
    trade_state: str
    total_minor: int
    currency: str
    success_time: datetime | None


class WeChatPayChannel:
    """WeChat-Pay-style channel (APIv3 shapes, HMAC-SHA256 under the APIv3 key).

    The adapter does not own `http_client`; whoever created it closes it.
    """

    def __init__(
        self,
        base_url: str,
        mch_id: str,
        api_v3_key: str,
        notify_url: str,
        http_client: httpx.AsyncClient,
        timeout_s: float = 5.0,
        notification_age_max_s: int = 300,
        clock: Clock | None = None,
    ) -> None:
        invariant(timeout_s > 0, "timeout_s must be positive")
        invariant(notification_age_max_s > 0, "notification_age_max_s must be positive")
        invariant(mch_id != "", "the WeChat Pay mchid must not be empty")
        invariant(
            len(api_v3_key.encode("utf-8")) == protocol.API_V3_KEY_BYTES,
            f"the WeChat Pay APIv3 key must be {protocol.API_V3_KEY_BYTES} bytes",
        )
        self._base_url = base_url.rstrip("/")
        self._mch_id = mch_id
        self._api_v3_key = api_v3_key
        self._notify_url = notify_url
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._notification_age_max_s = notification_age_max_s
        self._clock: Clock = clock if clock is not None else SystemClock()

    async def prepare(
        self, *, payment_id: str, amount_minor: int, currency: str, description: str
    ) -> PreparedTrade:
        """Create (or find again) the native-pay trade of `payment_id`; safe to retry.

        `channel_trade_id` is the channel's transaction id, the same one its payment
        notification and query report. Raises ChannelRejected when the channel refuses
        (`invalid_request` when the payment id was used with another amount, `trade_error`
        when it declines the trade), ChannelUnavailable when the outcome is unknown.
        """
        invariant(amount_minor > 0, "amount_minor must be positive")
        _check_out_number(payment_id, "payment id")
        answer = await self._call(
            "POST",
            protocol.NATIVE_PAY_PATH,
            payload={
                "mchid": self._mch_id,
                "out_trade_no": payment_id,
                "description": wire.trade_description(
                    description, payment_id, length_max=protocol.DESCRIPTION_LENGTH_MAX
                ),
                "notify_url": self._notify_url,
                "amount": {"total": amount_minor, "currency": currency},
            },
        )
        if answer.status_code != 200:
            raise _refusal(answer, {})
        try:
            transaction_id = _identifier(answer.payload, "transaction_id")
            code_url = wire.required_text(
                answer.payload, "code_url", length_max=protocol.NOTIFY_URL_LENGTH_MAX
            )
            h5_url = wire.required_text(
                answer.payload, "h5_url", length_max=protocol.NOTIFY_URL_LENGTH_MAX
            )
            out_trade_no = wire.required_text(
                answer.payload, "out_trade_no", length_max=IDENTIFIER_LENGTH_MAX
            )
        except InvalidNotification as error:
            raise ChannelUnavailable(f"wechat pay answer is incomplete: {error}") from error
        if out_trade_no != payment_id:
            raise ChannelUnavailable("wechat pay answer is about another out_trade_no")
        if not code_url.startswith(protocol.CODE_URL_PREFIX):
            raise ChannelUnavailable("wechat pay answer has no weixin:// code_url")
        if not h5_url.startswith(("http://", "https://")):
            raise ChannelUnavailable("wechat pay answer has no http(s) h5_url")
        return PreparedTrade(channel_trade_id=transaction_id, pay_url=h5_url, qr_code=code_url)

    async def refund(
        self,
        *,
        payment_id: str,
        refund_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> RefundAccepted:
        """Ask for a refund of part or all of the paid trade of `payment_id`; safe to retry
        (`refund_id` is the channel's out_refund_no, its idempotency key).

        The channel wants the trade's total with every refund, so the trade is queried
        first. Raises ChannelRejected with `trade_not_exist`, `trade_not_paid`,
        `refund_exceeds_paid` (the refunds would exceed the paid total), or the channel's
        code lowercased (e.g. `invalid_request` when the refund id was used with another
        amount); ChannelUnavailable when the outcome is unknown.
        """
        invariant(amount_minor > 0, "amount_minor must be positive")
        _check_out_number(payment_id, "payment id")
        _check_out_number(refund_id, "refund id")
        transaction = await self._transaction(payment_id)
        if transaction is None:
            raise ChannelRejected(
                REJECTION_CODE_TRADE_NOT_EXIST, f"wechat pay has no trade {payment_id}"
            )
        answer = await self._call(
            "POST",
            protocol.REFUNDS_PATH,
            payload={
                "out_trade_no": payment_id,
                "out_refund_no": refund_id,
                "reason": wire.trimmed(reason, length_max=protocol.REFUND_REASON_LENGTH_MAX),
                "notify_url": self._notify_url,
                "amount": {
                    "refund": amount_minor,
                    "total": transaction.total_minor,
                    "currency": currency,
                },
            },
        )
        if answer.status_code != 200:
            raise _refusal(answer, _REFUND_REJECTION_CODES)
        try:
            channel_refund_id = _identifier(answer.payload, "refund_id")
            out_refund_no = wire.required_text(
                answer.payload, "out_refund_no", length_max=IDENTIFIER_LENGTH_MAX
            )
            status = wire.required_text(answer.payload, "status", length_max=EVENT_TYPE_LENGTH_MAX)
        except InvalidNotification as error:
            raise ChannelUnavailable(f"wechat pay refund answer is incomplete: {error}") from error
        if out_refund_no != refund_id:
            raise ChannelUnavailable("wechat pay refund answer is about another out_refund_no")
        if status not in protocol.REFUND_STATUSES:
            raise ChannelUnavailable(f"wechat pay refund answer has status {status[:32]!r}")
        return RefundAccepted(channel_refund_id=channel_refund_id)

    async def query_refund(
        self, *, payment_id: str, refund_id: str
    ) -> VerifiedRefundNotification | None:
        """Ask for a refund's result: None while it is processing or unknown, otherwise
        its success or failure with id `query:<refund_id>`. Raises ChannelUnavailable when
        the answer is unknown."""
        if protocol.OUT_NUMBER_PATTERN.fullmatch(refund_id) is None:
            return None  # The channel refuses such an id, so it knows no such refund.
        answer = await self._call("GET", protocol.refund_path(refund_id))
        if answer.status_code == 404 and _error_code(answer) == protocol.CODE_RESOURCE_NOT_EXISTS:
            return None
        if answer.status_code != 200:
            raise ChannelUnavailable(
                f"wechat pay refused the refund query: HTTP {answer.status_code}"
            )
        try:
            status = _choice(answer.payload, "status", protocol.REFUND_STATUSES)
            if status == protocol.REFUND_STATUS_PROCESSING:
                return None
            verified = _refund_result(answer.payload, status, notification_id=None)
        except InvalidNotification as error:
            raise ChannelUnavailable(f"wechat pay refund answer is invalid: {error}") from error
        if verified.refund_id != refund_id or verified.payment_id != payment_id:
            raise ChannelUnavailable("wechat pay refund answer is about another refund")
        return verified

    async def query(self, *, payment_id: str) -> VerifiedPaymentNotification | None:
        """Query the trade of `payment_id`: the answer when no notification arrives.

        Returns the paid trade (also when it was refunded since) as a verified
        notification with id `query:<transaction_id>`, or None while it is unpaid, closed
        or unknown. Raises ChannelUnavailable when the answer is unknown.
        """
        if protocol.OUT_NUMBER_PATTERN.fullmatch(payment_id) is None:
            return None  # The channel refuses such an id, so it knows no such trade.
        transaction = await self._transaction(payment_id)
        if transaction is None or transaction.trade_state not in protocol.PAID_TRADE_STATES:
            return None
        return _paid(transaction, f"query:{transaction.transaction_id}")

    async def close(self, *, payment_id: str) -> None:
        """Close the trade of `payment_id` so the payer can no longer pay it; safe to retry.

        Returns when the trade is closed, was closed already, or never existed. Raises
        ChannelRejected with `trade_already_paid` when the payer already paid, with the
        channel's code lowercased for another refusal, and ChannelUnavailable when the
        outcome is unknown.
        """
        _check_out_number(payment_id, "payment id")
        answer = await self._call(
            "POST", protocol.close_path(payment_id), payload={"mchid": self._mch_id}
        )
        if answer.status_code == 204:
            return
        if answer.status_code == 404 and _error_code(answer) == protocol.CODE_ORDER_NOT_EXIST:
            return
        raise _refusal(answer, _CLOSE_REJECTION_CODES)

    def read_notification(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime
    ) -> ChannelNotification:
        """Check a callback (signature, freshness, decryption, every field) and say what
        it proves. Pure: no I/O and no memory of earlier calls; replay protection is the
        caller's, by recording the notification id with its effect.

        Returns VerifiedPaymentNotification for TRANSACTION.SUCCESS,
        VerifiedRefundNotification for REFUND.SUCCESS / REFUND.ABNORMAL / REFUND.CLOSED,
        and IgnoredNotification (reason `earlier_trade_state`) for a genuine earlier trade
        state delivered out of order. Raises InvalidNotification with `reason` one of
        `too_large`, `missing_field`, `unknown_serial`, `invalid_timestamp`,
        `bad_signature`, `stale`, `from_future`, `invalid_body`, `invalid_field`,
        `unsupported_resource_type`, `unsupported_algorithm`, `undecryptable`,
        `wrong_mchid`, `unexpected_event_type`, `invalid_amount`, `invalid_currency`,
        `invalid_time`.
        """
        invariant(now.tzinfo is not None, "now must be timezone-aware")
        if len(body) > NOTIFICATION_BYTES_MAX:
            raise InvalidNotification("too_large", f"{len(body)} bytes")
        self._check_signed(body, headers, now)
        try:
            envelope = protocol.loads_object(body)
        except ValueError as error:
            raise InvalidNotification("invalid_body", "not a JSON object") from error
        notification_id = _identifier(envelope, "id")
        _time(envelope, "create_time")
        event_type = wire.required_text(envelope, "event_type", length_max=EVENT_TYPE_LENGTH_MAX)
        if (
            wire.required_text(envelope, "resource_type", length_max=64)
            != protocol.RESOURCE_TYPE_ENCRYPTED
        ):
            raise InvalidNotification("unsupported_resource_type")
        original_type, plaintext = self._decrypted_resource(_object(envelope, "resource"))
        if event_type == protocol.EVENT_TRANSACTION_SUCCESS:
            _expect_original_type(original_type, protocol.ORIGINAL_TYPE_TRANSACTION)
            transaction = self._checked_transaction(plaintext)
            if transaction.trade_state != protocol.TRADE_STATE_SUCCESS:
                raise InvalidNotification("invalid_field", "trade_state contradicts event_type")
            return _paid(transaction, notification_id)
        earlier_states = _TRANSACTION_EVENTS_OF_EARLIER_STATES.get(event_type)
        if earlier_states is not None:
            _expect_original_type(original_type, protocol.ORIGINAL_TYPE_TRANSACTION)
            transaction = self._checked_transaction(plaintext)
            if transaction.trade_state not in earlier_states:
                raise InvalidNotification("invalid_field", "trade_state contradicts event_type")
            return IgnoredNotification(
                notification_id=notification_id, reason=IGNORED_REASON_EARLIER_TRADE_STATE
            )
        refund_status = _REFUND_EVENT_STATUSES.get(event_type)
        if refund_status is not None:
            _expect_original_type(original_type, protocol.ORIGINAL_TYPE_REFUND)
            if (
                wire.required_text(plaintext, "mchid", length_max=IDENTIFIER_LENGTH_MAX)
                != self._mch_id
            ):
                raise InvalidNotification("wrong_mchid")
            status = _choice(plaintext, "refund_status", protocol.REFUND_STATUSES)
            if status != refund_status:
                raise InvalidNotification("invalid_field", "refund_status contradicts event_type")
            return _refund_result(plaintext, status, notification_id=notification_id)
        raise InvalidNotification("unexpected_event_type", event_type)

    def notification_answer(self, *, accepted: bool) -> NotificationAnswer:
        """Any 2xx stops WeChat Pay's retries; a 5xx with code FAIL asks for a retry."""
        if accepted:
            return NotificationAnswer(status_code=204, body="", media_type="text/plain")
        body = json.dumps(
            {"code": protocol.CODE_FAIL, "message": "the notification was not accepted"},
            separators=(",", ":"),
        )
        return NotificationAnswer(status_code=500, body=body, media_type="application/json")

    def _check_signed(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        """Check a notification's signature headers and freshness."""
        names = (
            protocol.HEADER_TIMESTAMP,
            protocol.HEADER_NONCE,
            protocol.HEADER_SIGNATURE,
            protocol.HEADER_SERIAL,
        )
        values = [headers.get(name.lower(), "") for name in names]
        missing = [name for name, value in zip(names, values, strict=True) if value == ""]
        if missing:
            raise InvalidNotification("missing_field", ", ".join(missing))
        timestamp, nonce, signature, serial = values
        if serial != protocol.SIGNATURE_SERIAL:
            raise InvalidNotification("unknown_serial", serial[:64])
        stamped_s = wire.parse_unix_seconds(timestamp, reason="invalid_timestamp")
        if len(nonce) > protocol.NONCE_LENGTH_MAX or len(signature) > protocol.SIGNATURE_LENGTH_MAX:
            raise InvalidNotification("invalid_field", "nonce or signature is too long")
        message = protocol.answer_message(timestamp, nonce, body)
        if not protocol.verify(message, signature, self._api_v3_key):
            raise InvalidNotification("bad_signature")
        wire.check_freshness(
            wire.unix_stamp_age_s(stamped_s, now),
            age_max_s=self._notification_age_max_s,
            future_skew_s_max=NOTIFICATION_FUTURE_SKEW_S_MAX,
            stamp=f"timestamp {stamped_s}",
        )

    def _decrypted_resource(self, resource: Mapping[str, object]) -> tuple[str, dict[str, object]]:
        """Return the resource's original type and decrypted JSON object."""
        if wire.required_text(resource, "algorithm", length_max=64) != protocol.RESOURCE_ALGORITHM:
            raise InvalidNotification("unsupported_algorithm")
        ciphertext = wire.required_text(resource, "ciphertext", length_max=protocol.BODY_BYTES_MAX)
        nonce = wire.required_text(resource, "nonce", length_max=protocol.RESOURCE_NONCE_LENGTH)
        if len(nonce) != protocol.RESOURCE_NONCE_LENGTH:
            raise InvalidNotification("invalid_field", "nonce has the wrong length")
        associated_data = wire.required_text(resource, "associated_data", length_max=64)
        original_type = wire.required_text(resource, "original_type", length_max=64)
        if associated_data != original_type:
            raise InvalidNotification("invalid_field", "associated_data is not original_type")
        try:
            plaintext = protocol.decrypt_resource(
                ciphertext,
                nonce=nonce,
                associated_data=associated_data,
                api_v3_key=self._api_v3_key,
            )
        except protocol.UndecryptableResource as error:
            raise InvalidNotification("undecryptable", str(error)) from error
        try:
            return original_type, protocol.loads_object(plaintext)
        except ValueError as error:
            raise InvalidNotification("invalid_field", "resource is not a JSON object") from error

    def _checked_transaction(self, fields: Mapping[str, object]) -> _Transaction:
        if wire.required_text(fields, "mchid", length_max=IDENTIFIER_LENGTH_MAX) != self._mch_id:
            raise InvalidNotification("wrong_mchid")
        return _transaction_fields(fields)

    async def _transaction(self, payment_id: str) -> _Transaction | None:
        """Query the trade of `payment_id`; None when the channel does not know it."""
        answer = await self._call(
            "GET", protocol.trade_path(payment_id), params={"mchid": self._mch_id}
        )
        if answer.status_code == 404 and _error_code(answer) == protocol.CODE_ORDER_NOT_EXIST:
            return None
        if answer.status_code != 200:
            raise ChannelUnavailable(f"wechat pay refused the query: HTTP {answer.status_code}")
        try:
            transaction = self._checked_transaction(answer.payload)
        except InvalidNotification as error:
            raise ChannelUnavailable(f"wechat pay query answer is invalid: {error}") from error
        if transaction.out_trade_no != payment_id:
            raise ChannelUnavailable("wechat pay query answer is about another trade")
        return transaction

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, object] | None = None,
    ) -> _Answer:
        """Send one signed request and return its verified answer.

        Raises ChannelUnavailable on timeout, connection error, a 401 (our key or clock
        is off), a 5xx, a body that is too large or not a JSON object, and an answer whose
        signature or timestamp does not verify.
        """
        body = b"" if payload is None else protocol.dumps(dict(payload))
        headers = {"accept": "application/json"}
        if payload is not None:
            headers["content-type"] = "application/json"
        request = self._http_client.build_request(
            method,
            f"{self._base_url}{path}",
            params=dict(params) if params is not None else None,
            content=body if payload is not None else None,
            headers=headers,
            timeout=httpx.Timeout(self._timeout_s),
        )
        # Sign exactly the path and query that go on the wire.
        path_with_query = request.url.raw_path.decode("ascii")
        timestamp = str(int(self._clock.now().timestamp()))
        nonce = secrets.token_hex(16)
        message = protocol.request_message(method, path_with_query, timestamp, nonce, body)
        request.headers["authorization"] = protocol.authorization(
            self._mch_id, nonce, timestamp, protocol.sign(message, self._api_v3_key)
        )
        answer = await wire.send_bounded(
            self._http_client,
            request,
            timeout_s=self._timeout_s,
            byte_count_max=RESPONSE_BYTES_MAX,
            peer="wechat pay",
        )
        status_code = answer.status_code
        if status_code == 401:
            raise ChannelUnavailable(
                "wechat pay refused the request's signature (check mchid, APIv3 key and clock)"
            )
        if status_code >= 500:
            raise wire.unavailable_status("wechat pay", status_code)
        content = wire.body_within_limit(answer.content, what="wechat pay answer")
        self._check_answer_signature(answer.headers, content)
        if content == b"":
            return _Answer(status_code=status_code, payload={})
        try:
            decoded = protocol.loads_object(content)
        except ValueError as error:
            raise ChannelUnavailable("wechat pay answer is not a JSON object") from error
        return _Answer(status_code=status_code, payload=decoded)

    def _check_answer_signature(self, headers: httpx.Headers, content: bytes) -> None:
        timestamp = headers.get(protocol.HEADER_TIMESTAMP, "")
        nonce = headers.get(protocol.HEADER_NONCE, "")
        signature = headers.get(protocol.HEADER_SIGNATURE, "")
        serial = headers.get(protocol.HEADER_SERIAL, "")
        if serial != protocol.SIGNATURE_SERIAL:
            raise ChannelUnavailable("wechat pay answer is not signed with the known key")
        if (
            protocol.UNIX_SECONDS_PATTERN.fullmatch(timestamp) is None
            or not 0 < len(nonce) <= protocol.NONCE_LENGTH_MAX
            or not protocol.verify(
                protocol.answer_message(timestamp, nonce, content), signature, self._api_v3_key
            )
        ):
            raise ChannelUnavailable("wechat pay answer signature does not verify")
        skew_s = abs(wire.unix_stamp_age_s(int(timestamp), self._clock.now()))
        if skew_s > protocol.TIMESTAMP_SKEW_S_MAX:
            raise ChannelUnavailable(f"wechat pay answer is stamped {skew_s} s away from now")


def _refusal(answer: _Answer, renamed_codes: Mapping[str, str]) -> ChannelError:
    """Turn a verified non-success answer into ChannelRejected (a definite 4xx refusal)
    or ChannelUnavailable (anything else)."""
    status_code = answer.status_code
    if status_code not in _DEFINITE_REFUSAL_STATUSES:
        return wire.unavailable_status("wechat pay", status_code)
    code = _error_code(answer)
    if code is None:
        return ChannelUnavailable(f"wechat pay answered HTTP {status_code} without an error code")
    return wire.rejection(
        code,
        answer.payload.get("message"),
        renamed_codes=renamed_codes,
        message_length_max=MESSAGE_LENGTH_MAX,
    )


def _error_code(answer: _Answer) -> str | None:
    """The answer's `code` when it is a well-formed channel error code."""
    code = answer.payload.get("code")
    if (
        isinstance(code, str)
        and 0 < len(code) <= ERROR_CODE_LENGTH_MAX
        and set(code) <= _ERROR_CODE_CHARACTERS
    ):
        return code
    return None


def _check_out_number(value: str, what: str) -> None:
    """Refuse an id the channel cannot carry (it appears in URL paths)."""
    if protocol.OUT_NUMBER_PATTERN.fullmatch(value) is None:
        raise ChannelRejected(
            REJECTION_CODE_PARAM_ERROR,
            f"the {what} must be 1 to 128 letters, digits, '_', '.', ':' or '-'",
        )


def _transaction_fields(fields: Mapping[str, object]) -> _Transaction:
    """Check the fields of a transaction; a paid one must say when it was paid."""
    trade_state = _choice(fields, "trade_state", protocol.TRADE_STATES)
    amount = _object(fields, "amount")
    success_time = (
        _time(fields, "success_time") if trade_state in protocol.PAID_TRADE_STATES else None
    )
    return _Transaction(
        transaction_id=_identifier(fields, "transaction_id"),
        out_trade_no=_identifier(fields, "out_trade_no"),
        trade_state=trade_state,
        total_minor=_amount(amount, "total"),
        currency=_currency(amount, "currency"),
        success_time=success_time,
    )


def _paid(transaction: _Transaction, notification_id: str) -> VerifiedPaymentNotification:
    """What a paid transaction proves; `_transaction_fields` made sure it says when."""
    if transaction.success_time is None:
        raise InvariantViolation("a paid transaction was checked to have a success_time")
    return VerifiedPaymentNotification(
        notification_id=notification_id,
        channel_trade_id=transaction.transaction_id,
        payment_id=transaction.out_trade_no,
        amount_minor=transaction.total_minor,
        currency=transaction.currency,
        paid_at=transaction.success_time,
    )


def _refund_result(
    fields: Mapping[str, object], status: str, *, notification_id: str | None
) -> VerifiedRefundNotification:
    """The result of a finished refund; `notification_id` None means a query answer."""
    invariant(status != protocol.REFUND_STATUS_PROCESSING, "a processing refund has no result")
    channel_refund_id = _identifier(fields, "refund_id")
    amount = _object(fields, "amount")
    succeeded = status == protocol.REFUND_STATUS_SUCCESS
    if succeeded:
        finished_at = _time(fields, "success_time")
        failure_code = None
        failure_message = ""
    elif status == protocol.REFUND_STATUS_ABNORMAL:
        finished_at = _time(fields, "abnormal_time")
        failure_code = REFUND_FAILURE_CODE_ABNORMAL
        failure_message = "the channel could not return the money to the payer"
    else:
        finished_at = _time(fields, "close_time")
        failure_code = REFUND_FAILURE_CODE_CLOSED
        failure_message = "the channel closed the refund"
    return VerifiedRefundNotification(
        notification_id=notification_id or f"query:{channel_refund_id}",
        refund_id=_identifier(fields, "out_refund_no"),
        payment_id=_identifier(fields, "out_trade_no"),
        channel_refund_id=channel_refund_id,
        amount_minor=_amount(amount, "refund"),
        currency=_currency(amount, "currency"),
        succeeded=succeeded,
        finished_at=finished_at,
        failure_code=failure_code,
        failure_message=failure_message,
    )


def _expect_original_type(original_type: str, expected: str) -> None:
    if original_type != expected:
        raise InvalidNotification("invalid_field", "original_type contradicts event_type")


def _identifier(fields: Mapping[str, object], name: str) -> str:
    value = wire.required_text(fields, name, length_max=IDENTIFIER_LENGTH_MAX)
    if protocol.OUT_NUMBER_PATTERN.fullmatch(value) is None:
        raise InvalidNotification("invalid_field", f"{name} is malformed")
    return value


def _choice(fields: Mapping[str, object], name: str, allowed: frozenset[str]) -> str:
    value = wire.required_text(fields, name, length_max=EVENT_TYPE_LENGTH_MAX)
    if value not in allowed:
        raise InvalidNotification("invalid_field", f"{name} {value!r} is unknown")
    return value


def _object(fields: Mapping[str, object], name: str) -> dict[str, object]:
    value = wire.required_field(fields, name)
    if not isinstance(value, dict):
        raise InvalidNotification("invalid_field", f"{name} is not an object")
    return value


def _amount(fields: Mapping[str, object], name: str) -> int:
    """A positive integer number of minor units: no bool, no float, no string."""
    value = wire.required_field(fields, name)
    if not wire.is_amount_minor(value, amount_minor_max=protocol.AMOUNT_MINOR_MAX):
        raise InvalidNotification("invalid_amount", f"{name} must be a positive integer")
    return value


def _currency(fields: Mapping[str, object], name: str) -> str:
    value = wire.required_field(fields, name)
    if not wire.is_currency_code(value):
        raise InvalidNotification("invalid_currency", f"{name} must be an ISO 4217 code")
    return value


def _time(fields: Mapping[str, object], name: str) -> datetime:
    """Parse RFC 3339 with an offset and return it in UTC; naive times are refused."""
    value = wire.required_field(fields, name)
    if not isinstance(value, str) or len(value) > TIMESTAMP_LENGTH_MAX:
        raise InvalidNotification("invalid_time", f"{name} is not a short string")
    return wire.parse_utc_timestamp(value, reason="invalid_time")
