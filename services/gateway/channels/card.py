"""The card channel adapter: authorise and capture at once, cancel, refund, query, and
verify the acquirer's webhooks (Adyen-style, see `card_protocol`).

A card payment has no payer step: `prepare` authorises and captures in two calls and
returns the proof of payment. The same adapter talks to a real acquirer and to payrail's
PSP simulator; only `base_url`, the merchant account and the keys differ.

Refunds go to `POST /card/v1/payments/by-reference/{payment_id}/refunds`, so a refund is
one call keyed by payrail's own ids and needs no earlier lookup of the acquirer's
reference (the simulator also serves the acquirer's `/payments/{pspReference}/refunds`).

A rejected API key or merchant account (HTTP 401/403) raises ChannelUnavailable, not
ChannelRejected: the acquirer did not look at the request at all, so it said nothing about
the payment; it is payrail's configuration that is wrong, and once it is fixed the same
request, under the same idempotency key, succeeds. Rejecting would fail customers'
payments and refunds for good because of an operator's mistake.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx

from services.common.clock import Clock, SystemClock
from services.common.invariant import invariant
from services.gateway.channels import card_protocol as protocol
from services.gateway.channels import wire
from services.gateway.channels.base import (
    ChannelNotification,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    InvalidNotification,
    NotificationAnswer,
    RefundAccepted,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)

# Stable codes of ChannelRejected raised by this adapter. Codes the acquirer sends that
# are not mapped here (e.g. `idempotency_key_conflict`, `payment_cancelled`,
# `validation_failed`) are passed on as they are.
REJECTION_CODE_CARD_DECLINED: Final = "card_declined"
REJECTION_CODE_REFERENCE_CONFLICT: Final = protocol.ERROR_CODE_REFERENCE_CONFLICT
# The same value as the Alipay adapter's: the gateway treats both channels alike.
REJECTION_CODE_TRADE_ALREADY_PAID: Final = "trade_already_paid"
REJECTION_CODE_TRADE_NOT_PAID: Final = "trade_not_paid"
REJECTION_CODE_TRADE_NOT_EXIST: Final = "trade_not_exist"
REJECTION_CODE_REFUND_EXCEEDS_PAID: Final = "refund_exceeds_paid"
# Used when a 422 answer carries no usable errorCode.
REJECTION_CODE_REQUEST_REFUSED: Final = "request_refused"
# The failure_code of a refund the acquirer accepted and then could not carry out.
REFUND_FAILURE_CODE: Final = "refund_failed"

# The longest answer or webhook body accepted; real ones are a few hundred bytes.
RESPONSE_BYTES_MAX: Final = 64 * 1024
NOTIFICATION_BYTES_MAX: Final = 64 * 1024
# The acquirer shows the description on statements; longer ones are cut, not refused.
DESCRIPTION_LENGTH_MAX: Final = 256
REFUND_REASON_LENGTH_MAX: Final = 256
# A webhook stamped further in the future than this is refused (see `wire`).
NOTIFICATION_FUTURE_SKEW_S_MAX: Final = wire.NOTIFICATION_FUTURE_SKEW_S_MAX
IDENTIFIER_LENGTH_MAX: Final = protocol.REFERENCE_LENGTH_MAX
# Messages copied from the acquirer into errors and logs are cut to this length.
MESSAGE_LENGTH_MAX: Final = 512

# Fields every webhook item carries; `amount` and `additionalData` are objects, the rest
# strings.
REQUIRED_NOTIFICATION_FIELDS: Final = (
    "eventCode",
    "success",
    "pspReference",
    "merchantAccountCode",
    "merchantReference",
    "amount",
    "eventDate",
    protocol.ADDITIONAL_DATA_FIELD,
)

_ERROR_CODE_PATTERN: Final = re.compile(r"[a-z0-9_]{1,64}")
_JSON_MEDIA_TYPE: Final = "application/json"
# The acquirer's answers by status: 200 did what was asked, 422 refused it for good; 401
# and 403 refused payrail's credentials (see the module docstring), and like every other
# status they leave the outcome unknown.
_SUCCESS_STATUSES: Final = frozenset({200})
_DEFINITE_REFUSAL_STATUSES: Final = frozenset({422})
_CREDENTIALS_REFUSED_STATUSES: Final = frozenset({401, 403})

# The acquirer's words for what the gateway calls a trade.
_REJECTION_CODES: Final = {
    protocol.ERROR_CODE_PAYMENT_CAPTURED: REJECTION_CODE_TRADE_ALREADY_PAID,
    protocol.ERROR_CODE_PAYMENT_NOT_CAPTURED: REJECTION_CODE_TRADE_NOT_PAID,
    protocol.ERROR_CODE_REFUND_EXCEEDS_CAPTURED: REJECTION_CODE_REFUND_EXCEEDS_PAID,
}


class CardDeclined(ChannelRejected):
    """The issuer refused the authorisation. `code` is `card_declined`, `message` the
    acquirer's refusal reason (e.g. `Insufficient Funds`) and `refusal_reason_code` its
    stable code (e.g. `51`), empty when the acquirer gave none."""

    def __init__(self, refusal_reason: str, refusal_reason_code: str) -> None:
        super().__init__(REJECTION_CODE_CARD_DECLINED, refusal_reason)
        self.refusal_reason_code = refusal_reason_code


@dataclass(frozen=True)
class _Answer:
    status_code: int
    content: bytes


class CardChannel:
    """Card channel behind an Adyen-style acquirer (API key per request, HMAC-signed
    webhooks).

    The adapter does not own `http_client`; whoever created it closes it.
    """

    def __init__(
        self,
        base_url: str,
        merchant_account: str,
        api_key: str,
        hmac_key: str,
        notify_url: str,
        http_client: httpx.AsyncClient,
        timeout_s: float = 5.0,
        notification_age_max_s: int = 86400,
        clock: Clock | None = None,
    ) -> None:
        invariant(timeout_s > 0, "timeout_s must be positive")
        invariant(notification_age_max_s > 0, "notification_age_max_s must be positive")
        invariant(merchant_account != "", "the card merchant account must not be empty")
        invariant(api_key != "", "the card API key must not be empty")
        invariant(hmac_key != "", "the card HMAC key must not be empty")
        self._base_url = base_url.rstrip("/")
        self._merchant_account = merchant_account
        self._api_key = api_key
        self._hmac_key = hmac_key
        self._notify_url = notify_url
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._notification_age_max_s = notification_age_max_s
        # Accepted like every adapter's; the card protocol's requests carry no timestamp
        # and `read_notification` is given `now`, so nothing reads it yet.
        self._clock: Clock = clock if clock is not None else SystemClock()

    async def prepare(
        self, *, payment_id: str, amount_minor: int, currency: str, description: str
    ) -> VerifiedPaymentNotification:
        """Authorise and capture `payment_id`; return the proof that it is paid.

        Safe to retry after any failure: both calls carry the payment id as idempotency
        key, so a retry finds the same authorisation and capture (the same
        channel_trade_id). Raises CardDeclined (a ChannelRejected, code `card_declined`)
        when the issuer refuses, ChannelRejected with `reference_conflict` when the payment
        id was authorised with another amount or currency, with the acquirer's errorCode
        for any other refusal (e.g. `payment_cancelled` when the authorisation was
        cancelled before its capture), and ChannelUnavailable on timeout, connection error,
        rejected credentials, 5xx, or an answer that is not what the protocol promises.
        """
        invariant(amount_minor > 0, "amount_minor must be positive")
        amount = {"value": amount_minor, "currency": currency}
        authorisation = await self._send(
            "POST",
            protocol.PAYMENTS_PATH,
            idempotency_key=payment_id,
            body={
                "merchantAccount": self._merchant_account,
                "reference": payment_id,
                "amount": amount,
                "description": wire.trade_description(
                    description, payment_id, length_max=DESCRIPTION_LENGTH_MAX
                ),
                "notifyUrl": self._notify_url,
            },
        )
        psp_reference = _authorised_psp_reference(_success_fields(authorisation), payment_id)
        capture = await self._send(
            "POST",
            protocol.capture_path(psp_reference),
            idempotency_key=payment_id,
            body={
                "merchantAccount": self._merchant_account,
                "reference": payment_id,
                "amount": amount,
            },
        )
        fields = _success_fields(capture)
        if fields.get("paymentPspReference") != psp_reference:
            raise ChannelUnavailable("card capture answer is about another authorisation")
        if fields.get("status") != protocol.CAPTURE_STATUS_CAPTURED:
            raise ChannelUnavailable("card capture answer does not say captured")
        if fields.get("amount") != amount:
            raise ChannelUnavailable("card capture answer has another amount")
        capture_reference = _answer_identifier(fields, "pspReference")
        return VerifiedPaymentNotification(
            notification_id=f"capture:{capture_reference}",
            channel_trade_id=psp_reference,
            payment_id=payment_id,
            amount_minor=amount_minor,
            currency=currency,
            paid_at=_answer_timestamp(fields, "capturedAt"),
        )

    async def refund(
        self,
        *,
        payment_id: str,
        refund_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> RefundAccepted:
        """Ask the acquirer to refund part or all of the captured payment `payment_id`.

        Safe to retry: the refund id is the idempotency key. Raises ChannelRejected with
        `refund_exceeds_paid` when the accepted refunds would exceed the captured amount,
        `trade_not_paid` when the payment is not captured, `trade_not_exist` when the
        acquirer does not know the payment, the acquirer's errorCode for any other refusal
        (e.g. `reference_conflict` when the refund id names another refund), and
        ChannelUnavailable when the outcome is unknown.
        """
        invariant(amount_minor > 0, "amount_minor must be positive")
        answer = await self._send(
            "POST",
            protocol.refund_by_payment_reference_path(payment_id),
            idempotency_key=refund_id,
            body={
                "merchantAccount": self._merchant_account,
                "reference": refund_id,
                "amount": {"value": amount_minor, "currency": currency},
                "reason": reason[:REFUND_REASON_LENGTH_MAX],
            },
        )
        if _is_not_found(answer, protocol.ERROR_CODE_PAYMENT_NOT_FOUND):
            raise ChannelRejected(
                REJECTION_CODE_TRADE_NOT_EXIST, f"the acquirer knows no payment {payment_id}"
            )
        fields = _success_fields(answer)
        if fields.get("merchantReference") != refund_id:
            raise ChannelUnavailable("card refund answer is about another refund")
        if fields.get("status") != protocol.REFUND_STATUS_RECEIVED:
            raise ChannelUnavailable("card refund answer does not say received")
        return RefundAccepted(channel_refund_id=_answer_identifier(fields, "pspReference"))

    async def query_refund(
        self, *, payment_id: str, refund_id: str
    ) -> VerifiedRefundNotification | None:
        """Ask for the refund's final result: None while it is processing or unknown.

        What it returns has the id `query:<refund pspReference>`. Raises ChannelUnavailable
        when the answer is unknown or is about another payment or refund.
        """
        answer = await self._send("GET", protocol.refund_by_reference_path(refund_id))
        if _is_not_found(answer, protocol.ERROR_CODE_REFUND_NOT_FOUND):
            return None
        fields = _success_fields(answer)
        if (
            fields.get("merchantReference") != refund_id
            or fields.get("paymentReference") != payment_id
        ):
            raise ChannelUnavailable("card refund query answer is not about this refund")
        status = fields.get("status")
        if status == protocol.REFUND_STATUS_RECEIVED:
            return None
        if status not in (protocol.REFUND_STATUS_REFUNDED, protocol.REFUND_STATUS_FAILED):
            raise ChannelUnavailable("card refund query answer has an unknown status")
        refund_reference = _answer_identifier(fields, "pspReference")
        amount_minor, currency = _answer_amount(fields)
        succeeded = status == protocol.REFUND_STATUS_REFUNDED
        failure_reason = fields.get("failureReason", "")
        return VerifiedRefundNotification(
            notification_id=f"query:{refund_reference}",
            refund_id=refund_id,
            payment_id=payment_id,
            channel_refund_id=refund_reference,
            amount_minor=amount_minor,
            currency=currency,
            succeeded=succeeded,
            finished_at=_answer_timestamp(fields, "finishedAt"),
            failure_code=None if succeeded else REFUND_FAILURE_CODE,
            failure_message=""
            if succeeded
            else wire.message_text(failure_reason, length_max=MESSAGE_LENGTH_MAX),
        )

    async def query(self, *, payment_id: str) -> VerifiedPaymentNotification | None:
        """Query the payment `payment_id`: the answer when no webhook arrives.

        Returns the captured payment as a verified notification with id
        `query:<pspReference>`, or None while it is only authorised, or when it was
        cancelled, refused or is unknown. Raises ChannelUnavailable when the answer is
        unknown or is about another payment.
        """
        answer = await self._send("GET", protocol.payment_by_reference_path(payment_id))
        if _is_not_found(answer, protocol.ERROR_CODE_PAYMENT_NOT_FOUND):
            return None
        fields = _success_fields(answer)
        if fields.get("merchantReference") != payment_id:
            raise ChannelUnavailable("card query answer is not about this payment")
        status = fields.get("status")
        if status not in protocol.PAYMENT_STATUSES:
            raise ChannelUnavailable("card query answer has an unknown status")
        if status != protocol.PAYMENT_STATUS_CAPTURED:
            return None
        psp_reference = _answer_identifier(fields, "pspReference")
        amount_minor, currency = _answer_amount(fields)
        return VerifiedPaymentNotification(
            notification_id=f"query:{psp_reference}",
            channel_trade_id=psp_reference,
            payment_id=payment_id,
            amount_minor=amount_minor,
            currency=currency,
            paid_at=_answer_timestamp(fields, "capturedAt"),
        )

    async def close(self, *, payment_id: str) -> None:
        """Cancel the authorisation of `payment_id` so it can never be captured.

        Returns when it is cancelled, was cancelled or refused already, or never existed;
        safe to retry. Raises ChannelRejected with `trade_already_paid` when it is
        captured, with the acquirer's errorCode for any other refusal, and
        ChannelUnavailable when the outcome is unknown.
        """
        answer = await self._send(
            "POST",
            protocol.cancel_by_reference_path(payment_id),
            idempotency_key=payment_id,
            body={"merchantAccount": self._merchant_account, "reference": payment_id},
        )
        if _is_not_found(answer, protocol.ERROR_CODE_PAYMENT_NOT_FOUND):
            return
        fields = _success_fields(answer)
        if fields.get("merchantReference") != payment_id:
            raise ChannelUnavailable("card cancel answer is not about this payment")
        if fields.get("status") not in (
            protocol.PAYMENT_STATUS_CANCELLED,
            protocol.PAYMENT_STATUS_REFUSED,
        ):
            raise ChannelUnavailable("card cancel answer does not say cancelled")

    def read_notification(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime
    ) -> ChannelNotification:
        """Check a webhook's raw body (one item, signature, freshness, fields) and say what
        it proves. Pure: no I/O and no memory of earlier calls; replays are the caller's
        to drop, by the notification id, which derives from signed references.

        CAPTURE proves a payment (id `capture:<capture pspReference>`, the same id
        `prepare` returns, so the webhook and the answer de-duplicate); REFUND proves a
        refund's final result (id `refund:<refund pspReference>`); AUTHORISATION, a failed
        CAPTURE and any other event are genuine but change nothing (IgnoredNotification).

        Raises InvalidNotification with `reason` one of `too_large`,
        `unsupported_media_type`, `invalid_json`, `missing_field`, `invalid_field`,
        `not_one_item`, `invalid_amount`, `wrong_merchant_account`, `bad_signature`,
        `invalid_event_date`, `stale`, `from_future`, `invalid_currency`.
        """
        invariant(now.tzinfo is not None, "now must be timezone-aware")
        if len(body) > NOTIFICATION_BYTES_MAX:
            raise InvalidNotification("too_large", f"{len(body)} bytes")
        media_type = headers.get("content-type", _JSON_MEDIA_TYPE).split(";")[0].strip().lower()
        if media_type != _JSON_MEDIA_TYPE:
            raise InvalidNotification("unsupported_media_type", media_type[:64])
        fields = _notification_item_fields(body)
        item, signature = _parse_item(fields)
        if item.merchant_account_code != self._merchant_account:
            raise InvalidNotification(
                "wrong_merchant_account", item.merchant_account_code[:IDENTIFIER_LENGTH_MAX]
            )
        if not protocol.verify_hmac_signature(item, signature, self._hmac_key):
            raise InvalidNotification("bad_signature")
        event_date = wire.parse_utc_timestamp(item.event_date, reason="invalid_event_date")
        wire.check_freshness(
            (now - event_date).total_seconds(),
            age_max_s=self._notification_age_max_s,
            future_skew_s_max=NOTIFICATION_FUTURE_SKEW_S_MAX,
            stamp="eventDate",
        )
        _check_item_values(item)
        return _notification(item, event_date)

    def notification_answer(self, *, accepted: bool) -> NotificationAnswer:
        """`[accepted]` (HTTP 200) stops the acquirer's retries; HTTP 500 asks for one."""
        if accepted:
            return NotificationAnswer(status_code=200, body=protocol.NOTIFICATION_ACKNOWLEDGEMENT)
        return NotificationAnswer(status_code=500, body="[retry]")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        idempotency_key: str | None = None,
        body: Mapping[str, object] | None = None,
    ) -> _Answer:
        """Send one request; return its status and at most RESPONSE_BYTES_MAX of body.

        Raises ChannelUnavailable on timeout, connection error or a larger body.
        """
        headers = {protocol.API_KEY_HEADER: self._api_key, "accept": _JSON_MEDIA_TYPE}
        if idempotency_key is not None:
            headers[protocol.IDEMPOTENCY_KEY_HEADER] = idempotency_key
        request = self._http_client.build_request(
            method,
            f"{self._base_url}{path}",
            json=None if body is None else dict(body),
            headers=headers,
            timeout=httpx.Timeout(self._timeout_s),
        )
        answer = await wire.send_bounded(
            self._http_client,
            request,
            timeout_s=self._timeout_s,
            byte_count_max=RESPONSE_BYTES_MAX,
            peer="card acquirer",
        )
        content = wire.body_within_limit(answer.content, what="card acquirer answer")
        return _Answer(status_code=answer.status_code, content=content)


def _success_fields(answer: _Answer) -> dict[str, object]:
    """Return the JSON object of a 200 answer; raise for every other answer.

    422 raises ChannelRejected (the acquirer refused for good); 401 and 403 (credentials
    refused, see the module docstring) and anything else raise ChannelUnavailable.
    """
    outcome = wire.classify_status(
        answer.status_code,
        refusal_statuses=_DEFINITE_REFUSAL_STATUSES,
        success_statuses=_SUCCESS_STATUSES,
    )
    if outcome is wire.AnswerOutcome.REFUSED:
        raise _rejection(answer.content)
    if answer.status_code in _CREDENTIALS_REFUSED_STATUSES:
        raise ChannelUnavailable(
            f"card acquirer refused payrail's credentials (HTTP {answer.status_code}): "
            "check the card API key and merchant account"
        )
    if outcome is wire.AnswerOutcome.UNKNOWN:
        raise wire.unavailable_status("card acquirer", answer.status_code)
    fields = wire.json_object(answer.content)
    if fields is None:
        raise ChannelUnavailable("card acquirer answer is not a JSON object")
    return fields


def _rejection(content: bytes) -> ChannelRejected:
    fields = wire.json_object(content) or {}
    error_code = fields.get("errorCode")
    if not isinstance(error_code, str) or _ERROR_CODE_PATTERN.fullmatch(error_code) is None:
        error_code = REJECTION_CODE_REQUEST_REFUSED
    return wire.rejection(
        error_code,
        fields.get("message"),
        renamed_codes=_REJECTION_CODES,
        message_length_max=MESSAGE_LENGTH_MAX,
    )


def _is_not_found(answer: _Answer, error_code: str) -> bool:
    """True for the acquirer's own 404 about a missing payment or refund.

    A 404 without that errorCode (a wrong base URL, a proxy) is not proof that the
    payment or refund does not exist, and is left to `_success_fields` (unavailable).
    """
    if answer.status_code != 404:
        return False
    fields = wire.json_object(answer.content)
    return fields is not None and fields.get("errorCode") == error_code


def _authorised_psp_reference(fields: Mapping[str, object], payment_id: str) -> str:
    """Return the authorisation's pspReference; raise CardDeclined for a refusal."""
    if fields.get("merchantReference") != payment_id:
        raise ChannelUnavailable("card authorisation answer is about another payment")
    psp_reference = _answer_identifier(fields, "pspReference")
    result_code = fields.get("resultCode")
    if result_code == protocol.RESULT_CODE_REFUSED:
        reason = fields.get("refusalReason")
        reason_code = fields.get("refusalReasonCode")
        raise CardDeclined(
            refusal_reason=wire.message_text(reason, length_max=MESSAGE_LENGTH_MAX) or "Refused",
            refusal_reason_code=reason_code[:16] if isinstance(reason_code, str) else "",
        )
    if result_code != protocol.RESULT_CODE_AUTHORISED:
        raise ChannelUnavailable("card authorisation answer has an unexpected resultCode")
    return psp_reference


def _answer_identifier(fields: Mapping[str, object], name: str) -> str:
    value = fields.get(name)
    if not protocol.is_valid_reference(value):
        raise ChannelUnavailable(f"card acquirer answer lacks a valid {name}")
    return value


def _answer_amount(fields: Mapping[str, object]) -> tuple[int, str]:
    amount = fields.get("amount")
    if not isinstance(amount, dict):
        raise ChannelUnavailable("card acquirer answer lacks an amount")
    value, currency = amount.get("value"), amount.get("currency")
    if not protocol.is_valid_amount_value(value) or not protocol.is_valid_currency(currency):
        raise ChannelUnavailable("card acquirer answer has an invalid amount")
    return value, currency


def _answer_timestamp(fields: Mapping[str, object], name: str) -> datetime:
    value = fields.get(name)
    try:
        if not isinstance(value, str):
            raise InvalidNotification("invalid_timestamp", name)
        return wire.parse_utc_timestamp(value, reason="invalid_timestamp")
    except InvalidNotification as error:
        raise ChannelUnavailable(f"card acquirer answer has no valid {name}") from error


def _notification_item_fields(body: bytes) -> dict[str, object]:
    """Return the one `NotificationRequestItem` of a webhook body."""
    try:
        document = json.loads(body)
    except ValueError as error:
        raise InvalidNotification("invalid_json", "the body is not JSON") from error
    if not isinstance(document, dict):
        raise InvalidNotification("invalid_json", "the body is not a JSON object")
    items = document.get(protocol.NOTIFICATION_ITEMS_FIELD)
    if items is None:
        raise InvalidNotification("missing_field", protocol.NOTIFICATION_ITEMS_FIELD)
    if not isinstance(items, list):
        raise InvalidNotification("invalid_field", f"{protocol.NOTIFICATION_ITEMS_FIELD} type")
    if len(items) != 1:
        raise InvalidNotification("not_one_item", f"{len(items)} items")
    (wrapper,) = items
    if not isinstance(wrapper, dict):
        raise InvalidNotification("invalid_field", "the item is not an object")
    fields = wrapper.get(protocol.NOTIFICATION_REQUEST_ITEM_FIELD)
    if fields is None:
        raise InvalidNotification("missing_field", protocol.NOTIFICATION_REQUEST_ITEM_FIELD)
    if not isinstance(fields, dict):
        raise InvalidNotification(
            "invalid_field", f"{protocol.NOTIFICATION_REQUEST_ITEM_FIELD} type"
        )
    return fields


def _parse_item(fields: Mapping[str, object]) -> tuple[protocol.NotificationItem, str]:
    """Return the item and its signature once every field has the right type."""
    missing = [name for name in REQUIRED_NOTIFICATION_FIELDS if fields.get(name) in (None, "")]
    if missing:
        raise InvalidNotification("missing_field", ", ".join(missing))
    amount = fields["amount"]
    additional_data = fields[protocol.ADDITIONAL_DATA_FIELD]
    if not isinstance(amount, dict) or not isinstance(additional_data, dict):
        raise InvalidNotification("invalid_field", "amount and additionalData must be objects")
    if "value" not in amount or "currency" not in amount:
        raise InvalidNotification("missing_field", "amount.value, amount.currency")
    value = amount["value"]
    # A number that is not a whole, positive JSON integer cannot even be signed as one.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidNotification("invalid_amount", str(value)[:32])
    signature = additional_data.get(protocol.HMAC_SIGNATURE_FIELD)
    if signature in (None, ""):
        raise InvalidNotification("missing_field", protocol.HMAC_SIGNATURE_FIELD)
    success = fields["success"]
    if success not in ("true", "false"):
        raise InvalidNotification("invalid_field", "success must be 'true' or 'false'")
    texts = {
        name: fields.get(name, "")
        for name in (
            "eventCode",
            "pspReference",
            "originalReference",
            "merchantAccountCode",
            "merchantReference",
            "eventDate",
            "reason",
        )
    }
    texts["currency"] = amount["currency"]
    texts["paymentReference"] = additional_data.get(protocol.PAYMENT_REFERENCE_FIELD, "")
    texts["hmacSignature"] = signature
    wrong_types = sorted(name for name, text in texts.items() if not isinstance(text, str))
    if wrong_types:
        raise InvalidNotification("invalid_field", f"{', '.join(wrong_types)} must be strings")
    strings = {name: str(text) for name, text in texts.items()}
    item = protocol.NotificationItem(
        event_code=strings["eventCode"],
        success=success == "true",
        psp_reference=strings["pspReference"],
        original_reference=strings["originalReference"],
        merchant_account_code=strings["merchantAccountCode"],
        merchant_reference=strings["merchantReference"],
        amount_value=value,
        currency=strings["currency"],
        event_date=strings["eventDate"],
        payment_reference=strings["paymentReference"],
        reason=strings["reason"],
    )
    return item, strings["hmacSignature"]


def _check_item_values(item: protocol.NotificationItem) -> None:
    """Check the values of a genuine item: ids, amount and currency."""
    ids = {
        "pspReference": item.psp_reference,
        "originalReference": item.original_reference,
        "merchantReference": item.merchant_reference,
        "paymentReference": item.payment_reference,
    }
    for name, value in ids.items():
        # The optional ones may be absent (empty); present ones must be valid ids.
        if value != "" and not protocol.is_valid_reference(value):
            raise InvalidNotification("invalid_field", f"{name} is not a valid id")
    if len(item.event_code) > 64:
        raise InvalidNotification("invalid_field", "eventCode is too long")
    if not protocol.is_valid_amount_value(item.amount_value):
        raise InvalidNotification("invalid_amount", str(item.amount_value)[:32])
    if not protocol.is_valid_currency(item.currency):
        raise InvalidNotification("invalid_currency", item.currency[:16])


def _notification(item: protocol.NotificationItem, event_date: datetime) -> ChannelNotification:
    """Say what a genuine, valid item proves."""
    if item.event_code == protocol.EVENT_CODE_CAPTURE and item.success:
        if item.original_reference == "":
            raise InvalidNotification("missing_field", "originalReference")
        return VerifiedPaymentNotification(
            notification_id=f"capture:{item.psp_reference}",
            channel_trade_id=item.original_reference,
            payment_id=item.merchant_reference,
            amount_minor=item.amount_value,
            currency=item.currency,
            paid_at=event_date,
        )
    if item.event_code == protocol.EVENT_CODE_REFUND:
        if item.payment_reference == "":
            raise InvalidNotification("missing_field", protocol.PAYMENT_REFERENCE_FIELD)
        return VerifiedRefundNotification(
            notification_id=f"refund:{item.psp_reference}",
            refund_id=item.merchant_reference,
            payment_id=item.payment_reference,
            channel_refund_id=item.psp_reference,
            amount_minor=item.amount_value,
            currency=item.currency,
            succeeded=item.success,
            finished_at=event_date,
            failure_code=None if item.success else REFUND_FAILURE_CODE,
            failure_message=""
            if item.success
            else wire.message_text(item.reason, length_max=MESSAGE_LENGTH_MAX),
        )
    event = item.event_code.lower()
    if item.event_code == protocol.EVENT_CODE_AUTHORISATION:
        reason = "authorisation_is_informational"
    elif item.event_code == protocol.EVENT_CODE_CAPTURE:
        # A failed capture leaves the payment unpaid: nothing to record.
        event, reason = "capture_failed", "capture_failed"
    else:
        reason = "unhandled_event_code"
    return IgnoredNotification(notification_id=f"{event}:{item.psp_reference}", reason=reason)
