"""The card channel's state and behaviour, independent of HTTP: payments and refunds in
memory with their idempotency keys, the answers and webhooks, and the simulator that
carries out each operation. The routes (`routes.py`) only translate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import ClassVar, Final

import structlog

from schemas.common import Channel
from services.common.clock import Clock
from services.common.invariant import InvariantViolation, invariant
from services.gateway.channels import card_protocol as protocol
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.notifier import (
    NotificationSender,
    OutboundNotification,
    RenderedAttempt,
)
from services.psp_simulator.settings import PspSimulatorSettings

logger = structlog.get_logger(__name__)

REQUEST_BYTES_MAX: Final = 64 * 1024
DESCRIPTION_LENGTH_MAX: Final = 256
REFUND_REASON_LENGTH_MAX: Final = 256
NOTIFY_URL_LENGTH_MAX: Final = 2048
# A payment keys up to three requests (authorise, capture, cancel) and a refund one, so
# this many stored answers per trade_count_max are enough for every payment and refund.
IDEMPOTENCY_ANSWERS_PER_TRADE: Final = 4
PSP_REFERENCE_DIGITS: Final = 16
# The `reason` of a REFUND webhook and the `failureReason` of a refund query when the
# `fail_refunds` fault made the refund fail.
REFUND_FAILURE_REASON: Final = "Refund failed at the issuer"

# Errors whose HTTP status is not 422.
_HTTP_STATUS_BY_ERROR_CODE: Final = {
    protocol.ERROR_CODE_PAYMENT_NOT_FOUND: 404,
    protocol.ERROR_CODE_REFUND_NOT_FOUND: 404,
    protocol.ERROR_CODE_STORE_FULL: 503,
}

_OPERATION_AUTHORISE: Final = "authorise"
_OPERATION_CAPTURE: Final = "capture"
_OPERATION_CANCEL: Final = "cancel"
_OPERATION_REFUND: Final = "refund"


@dataclass(frozen=True)
class CardPayment:
    """One authorisation and, once captured, its capture (only full captures exist)."""

    psp_reference: str
    reference: str
    amount_minor: int
    currency: str
    description: str
    notify_url: str
    status: str
    authorised_at: datetime
    refusal_reason: str = ""
    refusal_reason_code: str = ""
    capture_psp_reference: str = ""
    capture_reference: str = ""
    captured_at: datetime | None = None


@dataclass(frozen=True)
class CardRefund:
    """One refund of a captured payment; `fails` is decided when it is accepted."""

    psp_reference: str
    reference: str
    payment_psp_reference: str
    payment_reference: str
    amount_minor: int
    currency: str
    reason: str
    fails: bool
    status: str
    received_at: datetime
    finished_at: datetime | None = None


@dataclass(frozen=True)
class _StoredAnswer:
    fingerprint: str
    body: Mapping[str, object]


class CardStoreError(Exception):
    """Base of the store's expected failures; `error_code` is the protocol's errorCode."""

    error_code: ClassVar[str]


class UnknownPayment(CardStoreError):
    error_code = protocol.ERROR_CODE_PAYMENT_NOT_FOUND


class UnknownRefund(CardStoreError):
    error_code = protocol.ERROR_CODE_REFUND_NOT_FOUND


class ReferenceConflict(CardStoreError):
    """The merchant reference names a payment or refund with another amount or currency."""

    error_code = protocol.ERROR_CODE_REFERENCE_CONFLICT


class IdempotencyKeyConflict(CardStoreError):
    """The key was used for the same operation with another request."""

    error_code = protocol.ERROR_CODE_IDEMPOTENCY_KEY_CONFLICT


class PaymentRefused(CardStoreError):
    error_code = protocol.ERROR_CODE_PAYMENT_REFUSED


class PaymentCancelled(CardStoreError):
    error_code = protocol.ERROR_CODE_PAYMENT_CANCELLED


class InvalidCaptureAmount(CardStoreError):
    error_code = protocol.ERROR_CODE_INVALID_CAPTURE_AMOUNT


class PaymentCaptured(CardStoreError):
    error_code = protocol.ERROR_CODE_PAYMENT_CAPTURED


class PaymentNotCaptured(CardStoreError):
    error_code = protocol.ERROR_CODE_PAYMENT_NOT_CAPTURED


class CurrencyMismatch(CardStoreError):
    error_code = protocol.ERROR_CODE_CURRENCY_MISMATCH


class RefundExceedsCaptured(CardStoreError):
    error_code = protocol.ERROR_CODE_REFUND_EXCEEDS_CAPTURED


class CardStoreFull(CardStoreError):
    """The store holds its maximum of payments, refunds or stored answers."""

    error_code = protocol.ERROR_CODE_STORE_FULL


class CardStore:
    """The card channel's payments, refunds and stored idempotent answers, in memory.

    Bounded by `trade_count_max` payments and as many refunds. All methods are
    synchronous and never await, so within one event loop each call is atomic.
    """

    def __init__(self, trade_count_max: int) -> None:
        invariant(trade_count_max > 0, "trade_count_max must be positive")
        self._trade_count_max = trade_count_max
        self._payments: dict[str, CardPayment] = {}
        self._payment_psp_reference_by_reference: dict[str, str] = {}
        self._refunds: dict[str, CardRefund] = {}
        self._refund_psp_reference_by_reference: dict[str, str] = {}
        self._refund_psp_references_by_payment: dict[str, list[str]] = {}
        self._psp_references: set[str] = set()
        self._answers: dict[tuple[str, str], _StoredAnswer] = {}

    def find_payment_by_reference(self, reference: str) -> CardPayment | None:
        psp_reference = self._payment_psp_reference_by_reference.get(reference)
        return None if psp_reference is None else self._payments[psp_reference]

    def find_payment_by_psp_reference(self, psp_reference: str) -> CardPayment | None:
        return self._payments.get(psp_reference)

    def find_refund_by_reference(self, reference: str) -> CardRefund | None:
        psp_reference = self._refund_psp_reference_by_reference.get(reference)
        return None if psp_reference is None else self._refunds[psp_reference]

    def authorise(
        self,
        *,
        reference: str,
        amount_minor: int,
        currency: str,
        description: str,
        notify_url: str,
        refusal: tuple[str, str] | None,
        now: datetime,
    ) -> tuple[CardPayment, bool]:
        """Authorise a new payment (refused with `refusal`, a reason and its code, when
        given), or return the existing one for `reference`; say whether it is new.

        Raises ReferenceConflict when the existing one has another amount or currency,
        CardStoreFull when a new one would exceed trade_count_max.
        """
        existing = self.find_payment_by_reference(reference)
        if existing is not None:
            if (existing.amount_minor, existing.currency) != (amount_minor, currency):
                raise ReferenceConflict(
                    f"reference {reference} is a payment of "
                    f"{existing.amount_minor} {existing.currency}"
                )
            return existing, False
        if len(self._payments) >= self._trade_count_max:
            raise CardStoreFull(f"the simulator holds {self._trade_count_max} card payments")
        reason, reason_code = refusal if refusal is not None else ("", "")
        payment = CardPayment(
            psp_reference=self._new_psp_reference(),
            reference=reference,
            amount_minor=amount_minor,
            currency=currency,
            description=description,
            notify_url=notify_url,
            status=protocol.PAYMENT_STATUS_AUTHORISED
            if refusal is None
            else protocol.PAYMENT_STATUS_REFUSED,
            authorised_at=now,
            refusal_reason=reason,
            refusal_reason_code=reason_code,
        )
        self._payments[payment.psp_reference] = payment
        self._payment_psp_reference_by_reference[reference] = payment.psp_reference
        return payment, True

    def capture(
        self,
        psp_reference: str,
        *,
        reference: str,
        amount_minor: int,
        currency: str,
        now: datetime,
    ) -> tuple[CardPayment, bool]:
        """Capture the whole authorised amount; say whether this call captured it.

        Capturing a captured payment again with its amount changes nothing. Raises
        UnknownPayment, PaymentRefused, PaymentCancelled and InvalidCaptureAmount.
        """
        payment = self._payments.get(psp_reference)
        if payment is None:
            raise UnknownPayment(f"no payment has pspReference {psp_reference}")
        if (payment.amount_minor, payment.currency) != (amount_minor, currency):
            raise InvalidCaptureAmount(
                f"only the whole {payment.amount_minor} {payment.currency} can be captured"
            )
        if payment.status == protocol.PAYMENT_STATUS_CAPTURED:
            return payment, False
        if payment.status == protocol.PAYMENT_STATUS_REFUSED:
            raise PaymentRefused(f"payment {psp_reference} was refused")
        if payment.status == protocol.PAYMENT_STATUS_CANCELLED:
            raise PaymentCancelled(f"payment {psp_reference} was cancelled")
        invariant(
            payment.status == protocol.PAYMENT_STATUS_AUTHORISED,
            f"payment {psp_reference} has unknown status {payment.status}",
        )
        captured = dataclasses.replace(
            payment,
            status=protocol.PAYMENT_STATUS_CAPTURED,
            capture_psp_reference=self._new_psp_reference(),
            capture_reference=reference,
            captured_at=now,
        )
        self._payments[psp_reference] = captured
        return captured, True

    def cancel(self, reference: str) -> tuple[CardPayment, bool]:
        """Cancel an uncaptured authorisation; say whether this call cancelled it.

        A cancelled or refused payment is returned unchanged: there is nothing to cancel.
        Raises UnknownPayment and PaymentCaptured.
        """
        payment = self.find_payment_by_reference(reference)
        if payment is None:
            raise UnknownPayment(f"no payment has reference {reference}")
        if payment.status in (protocol.PAYMENT_STATUS_CANCELLED, protocol.PAYMENT_STATUS_REFUSED):
            return payment, False
        if payment.status == protocol.PAYMENT_STATUS_CAPTURED:
            raise PaymentCaptured(f"payment {payment.psp_reference} is already captured")
        cancelled = dataclasses.replace(payment, status=protocol.PAYMENT_STATUS_CANCELLED)
        self._payments[payment.psp_reference] = cancelled
        return cancelled, True

    def refund(
        self,
        payment_psp_reference: str,
        *,
        reference: str,
        amount_minor: int,
        currency: str,
        reason: str,
        fails: bool,
        now: datetime,
    ) -> tuple[CardRefund, bool]:
        """Accept a refund of a captured payment, or return the existing one for
        `reference`; say whether it is new.

        Refunds that did not fail never add up to more than the captured amount. Raises
        UnknownPayment, PaymentNotCaptured, CurrencyMismatch, ReferenceConflict (the
        reference names a refund of another payment, amount or currency),
        RefundExceedsCaptured and CardStoreFull.
        """
        payment = self._payments.get(payment_psp_reference)
        if payment is None:
            raise UnknownPayment(f"no payment has pspReference {payment_psp_reference}")
        existing = self.find_refund_by_reference(reference)
        if existing is not None:
            if (existing.payment_psp_reference, existing.amount_minor, existing.currency) != (
                payment_psp_reference,
                amount_minor,
                currency,
            ):
                raise ReferenceConflict(f"reference {reference} is another refund")
            return existing, False
        if payment.status != protocol.PAYMENT_STATUS_CAPTURED:
            raise PaymentNotCaptured(f"payment {payment.psp_reference} is {payment.status}")
        if currency != payment.currency:
            raise CurrencyMismatch(f"payment {payment.psp_reference} is in {payment.currency}")
        refunded_minor = sum(
            refund.amount_minor
            for refund in self._refunds_of(payment_psp_reference)
            if refund.status != protocol.REFUND_STATUS_FAILED
        )
        if refunded_minor + amount_minor > payment.amount_minor:
            raise RefundExceedsCaptured(
                f"{refunded_minor} of {payment.amount_minor} {currency} is already refunded"
            )
        if len(self._refunds) >= self._trade_count_max:
            raise CardStoreFull(f"the simulator holds {self._trade_count_max} card refunds")
        refund = CardRefund(
            psp_reference=self._new_psp_reference(),
            reference=reference,
            payment_psp_reference=payment_psp_reference,
            payment_reference=payment.reference,
            amount_minor=amount_minor,
            currency=currency,
            reason=reason,
            fails=fails,
            status=protocol.REFUND_STATUS_RECEIVED,
            received_at=now,
        )
        self._refunds[refund.psp_reference] = refund
        self._refund_psp_reference_by_reference[reference] = refund.psp_reference
        self._refund_psp_references_by_payment.setdefault(payment_psp_reference, []).append(
            refund.psp_reference
        )
        return refund, True

    def finish_refund(self, psp_reference: str, now: datetime) -> tuple[CardRefund, bool]:
        """End a received refund as refunded, or failed when it `fails`; say whether this
        call ended it. Raises UnknownRefund."""
        refund = self._refunds.get(psp_reference)
        if refund is None:
            raise UnknownRefund(f"no refund has pspReference {psp_reference}")
        if refund.status != protocol.REFUND_STATUS_RECEIVED:
            return refund, False
        status = protocol.REFUND_STATUS_FAILED if refund.fails else protocol.REFUND_STATUS_REFUNDED
        finished = dataclasses.replace(refund, status=status, finished_at=now)
        self._refunds[psp_reference] = finished
        return finished, True

    def stored_answer(
        self, operation: str, idempotency_key: str, fingerprint: str
    ) -> Mapping[str, object] | None:
        """The answer stored for the key, or None. Raises IdempotencyKeyConflict when the
        key was used for this operation with another request."""
        stored = self._answers.get((operation, idempotency_key))
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise IdempotencyKeyConflict(
                f"Idempotency-Key {idempotency_key} was used for another {operation} request"
            )
        return stored.body

    def check_answer_room(self) -> None:
        """Raise CardStoreFull when no further answer can be stored."""
        if len(self._answers) >= IDEMPOTENCY_ANSWERS_PER_TRADE * self._trade_count_max:
            raise CardStoreFull("the simulator holds its maximum of idempotent answers")

    def remember_answer(
        self, operation: str, idempotency_key: str, fingerprint: str, body: Mapping[str, object]
    ) -> None:
        invariant((operation, idempotency_key) not in self._answers, "an answer is stored once")
        self._answers[(operation, idempotency_key)] = _StoredAnswer(fingerprint, body)

    def _refunds_of(self, payment_psp_reference: str) -> list[CardRefund]:
        return [
            self._refunds[psp_reference]
            for psp_reference in self._refund_psp_references_by_payment.get(
                payment_psp_reference, []
            )
        ]

    def _new_psp_reference(self) -> str:
        """A new, unique 16-digit reference for a payment, capture or refund."""
        while True:
            psp_reference = (
                f"{secrets.randbelow(10**PSP_REFERENCE_DIGITS):0{PSP_REFERENCE_DIGITS}d}"
            )
            if psp_reference not in self._psp_references:
                self._psp_references.add(psp_reference)
                return psp_reference


class RefundFinisher:
    """Owns the timers that finish accepted refunds; `close` cancels those still waiting."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self, delay_s: float, finish: Callable[[], None], *, name: str) -> None:
        """Call `finish` after `delay_s`. Must be called from the running event loop."""
        if self._closed:
            logger.warning("card_refund_not_finished", task=name, reason="closed")
            return
        task = asyncio.get_running_loop().create_task(self._later(delay_s, finish), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _later(delay_s: float, finish: Callable[[], None]) -> None:
        await asyncio.sleep(delay_s)
        finish()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("card_refund_task_failed", task=task.get_name(), exc_info=task.exception())


class CardApiError(Exception):
    """A request the channel answers with an error: `{"status", "errorCode", "message"}`."""

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status_code = status_code
        self.error_code = error_code
        self.message = message

    @classmethod
    def invalid(cls, message: str) -> CardApiError:
        return cls(422, protocol.ERROR_CODE_VALIDATION_FAILED, message)

    @classmethod
    def of(cls, error: CardStoreError) -> CardApiError:
        status_code = _HTTP_STATUS_BY_ERROR_CODE.get(error.error_code, 422)
        return cls(status_code, error.error_code, str(error))


@dataclass(frozen=True)
class Call:
    """One API request as the channel sees it, independent of HTTP. `body` is the decoded
    JSON body (None when absent, too large or not JSON)."""

    api_key: str | None
    idempotency_key: str | None
    path_params: Mapping[str, str]
    body: object = None


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Mapping[str, object]


@dataclass
class CardSimulator:
    """The card channel's behaviour, independent of HTTP; routes only translate.

    Operations raise CardApiError or CardStoreError for error answers.
    """

    context: SimulatorContext
    store: CardStore
    finisher: RefundFinisher

    @property
    def settings(self) -> PspSimulatorSettings:
        return self.context.settings

    @property
    def clock(self) -> Clock:
        return self.context.clock

    def authorise(self, call: Call) -> Answer:
        fields = self._authenticated_fields(call)
        reference = _reference(fields, "reference")
        amount_minor, currency = _amount(fields)
        description = _text(fields, "description", DESCRIPTION_LENGTH_MAX)
        notify_url = _notify_url(fields)
        existing = self.store.find_payment_by_reference(reference)
        if existing is not None and (existing.amount_minor, existing.currency) != (
            amount_minor,
            currency,
        ):
            raise ReferenceConflict(
                f"reference {reference} is a payment of {existing.amount_minor} {existing.currency}"
            )

        def perform() -> Mapping[str, object]:
            declining = self.context.faults.of(Channel.CARD).decline_payments
            refusal = (
                (protocol.DECLINE_REFUSAL_REASON, protocol.DECLINE_REFUSAL_REASON_CODE)
                if declining or protocol.DECLINE_MARKER in description
                else None
            )
            payment, created = self.store.authorise(
                reference=reference,
                amount_minor=amount_minor,
                currency=currency,
                description=description,
                notify_url=notify_url,
                refusal=refusal,
                now=self.clock.now(),
            )
            if created:
                logger.info(
                    "card_payment_authorised",
                    psp_reference=payment.psp_reference,
                    reference=reference,
                    status=payment.status,
                )
            return authorisation_answer(payment)

        return self._idempotent(call, _OPERATION_AUTHORISE, "", fields, perform)

    def capture(self, call: Call) -> Answer:
        fields = self._authenticated_fields(call)
        psp_reference = _path_reference(call, "psp_reference")
        reference = _reference(fields, "reference")
        amount_minor, currency = _amount(fields)

        def perform() -> Mapping[str, object]:
            sender = self.context.running_sender()
            payment, newly_captured = self.store.capture(
                psp_reference,
                reference=reference,
                amount_minor=amount_minor,
                currency=currency,
                now=self.clock.now(),
            )
            if newly_captured:
                logger.info(
                    "card_payment_captured",
                    psp_reference=psp_reference,
                    capture_psp_reference=payment.capture_psp_reference,
                )
                self._notify_capture(sender, payment)
            return capture_answer(payment)

        return self._idempotent(call, _OPERATION_CAPTURE, psp_reference, fields, perform)

    def cancel(self, call: Call) -> Answer:
        fields = self._authenticated_fields(call)
        reference = _path_reference(call, "reference")
        if "reference" in fields:
            _reference(fields, "reference")

        def perform() -> Mapping[str, object]:
            payment, newly_cancelled = self.store.cancel(reference)
            if newly_cancelled:
                logger.info("card_payment_cancelled", psp_reference=payment.psp_reference)
            return cancel_answer(payment)

        return self._idempotent(call, _OPERATION_CANCEL, reference, fields, perform)

    def refund(self, call: Call) -> Answer:
        """Refund the payment named by the path's `reference` or `psp_reference`."""
        fields = self._authenticated_fields(call)
        payment = self._payment_of_path(call)
        reference = _reference(fields, "reference")
        amount_minor, currency = _amount(fields)
        reason = _text(fields, "reason", REFUND_REASON_LENGTH_MAX)

        def perform() -> Mapping[str, object]:
            refund, created = self.store.refund(
                payment.psp_reference,
                reference=reference,
                amount_minor=amount_minor,
                currency=currency,
                reason=reason,
                fails=self.context.faults.of(Channel.CARD).fail_refunds,
                now=self.clock.now(),
            )
            if created:
                logger.info(
                    "card_refund_received",
                    psp_reference=refund.psp_reference,
                    reference=reference,
                    fails=refund.fails,
                )
                self.finisher.start(
                    self.settings.refund_processing_ms / 1000,
                    partial(self.finish_refund, refund.psp_reference),
                    name=f"card-refund-{refund.psp_reference}",
                )
            return refund_answer(refund)

        return self._idempotent(call, _OPERATION_REFUND, payment.psp_reference, fields, perform)

    def query_payment(self, call: Call) -> Answer:
        self.authenticate(call)
        reference = _path_reference(call, "reference")
        payment = self.store.find_payment_by_reference(reference)
        if payment is None:
            raise UnknownPayment(f"no payment has reference {reference}")
        return Answer(200, payment_status_answer(payment))

    def query_refund(self, call: Call) -> Answer:
        self.authenticate(call)
        reference = _path_reference(call, "reference")
        refund = self.store.find_refund_by_reference(reference)
        if refund is None:
            raise UnknownRefund(f"no refund has reference {reference}")
        return Answer(200, refund_status_answer(refund))

    def finish_refund(self, psp_reference: str) -> None:
        """End a refund once its processing time is over and notify the result."""
        sender = self.context.running_sender()
        refund, newly_finished = self.store.finish_refund(psp_reference, self.clock.now())
        if not newly_finished:
            return
        logger.info("card_refund_finished", psp_reference=psp_reference, status=refund.status)
        faults = self.context.faults.of(Channel.CARD)
        if faults.lose_notifications:
            logger.info("notifications_lost_on_purpose", psp_reference=psp_reference)
            return
        payment = self.store.find_payment_by_psp_reference(refund.payment_psp_reference)
        if payment is None:
            raise InvariantViolation(f"refund {psp_reference} has no payment")
        notification = self._webhook(payment.notify_url, refund_item(refund, self._account()))
        sender.schedule([notification], duplicate=faults.duplicate_notifications)

    def authenticate(self, call: Call) -> None:
        """Refuse (401) a request without the merchant's API key; constant time."""
        expected = self.settings.card_api_key.encode("utf-8")
        provided = (call.api_key or "").encode("utf-8")
        if not hmac.compare_digest(expected, provided):
            raise CardApiError(401, protocol.ERROR_CODE_INVALID_API_KEY, "invalid API key")

    def _authenticated_fields(self, call: Call) -> dict[str, object]:
        """The body of an authenticated request for the one known merchant account."""
        self.authenticate(call)
        if not isinstance(call.body, dict):
            raise CardApiError.invalid(
                f"the body must be a JSON object of at most {REQUEST_BYTES_MAX} bytes"
            )
        fields: dict[str, object] = call.body
        merchant_account = fields.get("merchantAccount")
        if not isinstance(merchant_account, str) or merchant_account == "":
            raise CardApiError.invalid("merchantAccount is required")
        if merchant_account != self._account():
            raise CardApiError(
                403,
                protocol.ERROR_CODE_MERCHANT_ACCOUNT_NOT_ALLOWED,
                "the API key may not act for this merchant account",
            )
        key = call.idempotency_key
        if key is not None and not protocol.is_valid_reference(key):
            raise CardApiError.invalid(
                f"Idempotency-Key must be 1 to {protocol.REFERENCE_LENGTH_MAX} printable characters"
            )
        return fields

    def _idempotent(
        self,
        call: Call,
        operation: str,
        target: str,
        fields: Mapping[str, object],
        perform: Callable[[], Mapping[str, object]],
    ) -> Answer:
        """Answer a repeated key with its stored answer, else `perform` and store it."""
        key = call.idempotency_key
        if key is None:
            return Answer(200, perform())
        fingerprint = json.dumps([target, fields], sort_keys=True, separators=(",", ":"))
        stored = self.store.stored_answer(operation, key, fingerprint)
        if stored is not None:
            logger.info("card_request_replayed", operation=operation, idempotency_key=key)
            return Answer(200, stored)
        self.store.check_answer_room()
        body = perform()
        self.store.remember_answer(operation, key, fingerprint, body)
        return Answer(200, body)

    def _payment_of_path(self, call: Call) -> CardPayment:
        if "psp_reference" in call.path_params:
            psp_reference = _path_reference(call, "psp_reference")
            payment = self.store.find_payment_by_psp_reference(psp_reference)
            if payment is None:
                raise UnknownPayment(f"no payment has pspReference {psp_reference}")
            return payment
        reference = _path_reference(call, "reference")
        found = self.store.find_payment_by_reference(reference)
        if found is None:
            raise UnknownPayment(f"no payment has reference {reference}")
        return found

    def _notify_capture(self, sender: NotificationSender, payment: CardPayment) -> None:
        faults = self.context.faults.of(Channel.CARD)
        if faults.lose_notifications:
            logger.info("notifications_lost_on_purpose", psp_reference=payment.psp_reference)
            return
        account = self._account()
        notifications = [
            self._webhook(payment.notify_url, authorisation_item(payment, account)),
            self._webhook(payment.notify_url, capture_item(payment, account)),
        ]
        if faults.out_of_order_notifications:
            # The earlier fact, the authorisation, arrives after the capture.
            notifications.reverse()
        sender.schedule(
            notifications,
            duplicate=faults.duplicate_notifications,
            delay_ms=faults.notification_delay_ms,
            reference=payment.reference,
        )

    def _webhook(self, url: str, item: protocol.NotificationItem) -> OutboundNotification:
        """One webhook; every attempt sends the same body, as the acquirer does."""
        body = protocol.notification_body(item, self.settings.card_hmac_key)
        attempt = RenderedAttempt(body=body, headers={"content-type": "application/json"})

        def render(_notify_id: str, _now_s: int) -> RenderedAttempt:
            return attempt

        return OutboundNotification(
            key=item.psp_reference,
            url=url,
            render=render,
            acknowledged=protocol.is_acknowledgement,
        )

    def _account(self) -> str:
        return self.settings.card_merchant_account


def authorisation_answer(payment: CardPayment) -> dict[str, object]:
    answer: dict[str, object] = {
        "pspReference": payment.psp_reference,
        "merchantReference": payment.reference,
        "resultCode": protocol.RESULT_CODE_REFUSED
        if payment.status == protocol.PAYMENT_STATUS_REFUSED
        else protocol.RESULT_CODE_AUTHORISED,
        "amount": _amount_json(payment.amount_minor, payment.currency),
    }
    if payment.status == protocol.PAYMENT_STATUS_REFUSED:
        answer["refusalReason"] = payment.refusal_reason
        answer["refusalReasonCode"] = payment.refusal_reason_code
    return answer


def capture_answer(payment: CardPayment) -> dict[str, object]:
    if payment.captured_at is None:
        raise InvariantViolation("a capture answer needs a captured payment")
    return {
        "pspReference": payment.capture_psp_reference,
        "paymentPspReference": payment.psp_reference,
        "merchantReference": payment.reference,
        "reference": payment.capture_reference,
        "status": protocol.CAPTURE_STATUS_CAPTURED,
        "amount": _amount_json(payment.amount_minor, payment.currency),
        "capturedAt": _timestamp(payment.captured_at),
    }


def cancel_answer(payment: CardPayment) -> dict[str, object]:
    return {
        "paymentPspReference": payment.psp_reference,
        "merchantReference": payment.reference,
        "status": payment.status,
    }


def payment_status_answer(payment: CardPayment) -> dict[str, object]:
    answer: dict[str, object] = {
        "pspReference": payment.psp_reference,
        "merchantReference": payment.reference,
        "status": payment.status,
        "amount": _amount_json(payment.amount_minor, payment.currency),
    }
    if payment.captured_at is not None:
        answer["capturePspReference"] = payment.capture_psp_reference
        answer["capturedAt"] = _timestamp(payment.captured_at)
    return answer


def refund_answer(refund: CardRefund) -> dict[str, object]:
    """The answer to a refund request: always `received`, however the refund ends."""
    return {
        "pspReference": refund.psp_reference,
        "paymentPspReference": refund.payment_psp_reference,
        "merchantReference": refund.reference,
        "status": protocol.REFUND_STATUS_RECEIVED,
        "amount": _amount_json(refund.amount_minor, refund.currency),
    }


def refund_status_answer(refund: CardRefund) -> dict[str, object]:
    answer: dict[str, object] = {
        "pspReference": refund.psp_reference,
        "merchantReference": refund.reference,
        "paymentPspReference": refund.payment_psp_reference,
        "paymentReference": refund.payment_reference,
        "status": refund.status,
        "amount": _amount_json(refund.amount_minor, refund.currency),
    }
    if refund.finished_at is not None:
        answer["finishedAt"] = _timestamp(refund.finished_at)
    if refund.status == protocol.REFUND_STATUS_FAILED:
        answer["failureReason"] = REFUND_FAILURE_REASON
    return answer


def authorisation_item(payment: CardPayment, merchant_account: str) -> protocol.NotificationItem:
    return protocol.NotificationItem(
        event_code=protocol.EVENT_CODE_AUTHORISATION,
        success=payment.status != protocol.PAYMENT_STATUS_REFUSED,
        psp_reference=payment.psp_reference,
        original_reference="",
        merchant_account_code=merchant_account,
        merchant_reference=payment.reference,
        amount_value=payment.amount_minor,
        currency=payment.currency,
        event_date=_timestamp(payment.authorised_at),
        payment_reference=payment.reference,
        reason=payment.refusal_reason,
    )


def capture_item(payment: CardPayment, merchant_account: str) -> protocol.NotificationItem:
    if payment.captured_at is None:
        raise InvariantViolation("a CAPTURE webhook needs a captured payment")
    return protocol.NotificationItem(
        event_code=protocol.EVENT_CODE_CAPTURE,
        success=True,
        psp_reference=payment.capture_psp_reference,
        original_reference=payment.psp_reference,
        merchant_account_code=merchant_account,
        merchant_reference=payment.reference,
        amount_value=payment.amount_minor,
        currency=payment.currency,
        event_date=_timestamp(payment.captured_at),
        payment_reference=payment.reference,
    )


def refund_item(refund: CardRefund, merchant_account: str) -> protocol.NotificationItem:
    if refund.finished_at is None:
        raise InvariantViolation("a REFUND webhook needs a finished refund")
    succeeded = refund.status == protocol.REFUND_STATUS_REFUNDED
    return protocol.NotificationItem(
        event_code=protocol.EVENT_CODE_REFUND,
        success=succeeded,
        psp_reference=refund.psp_reference,
        original_reference=refund.payment_psp_reference,
        merchant_account_code=merchant_account,
        merchant_reference=refund.reference,
        amount_value=refund.amount_minor,
        currency=refund.currency,
        event_date=_timestamp(refund.finished_at),
        payment_reference=refund.payment_reference,
        reason="" if succeeded else REFUND_FAILURE_REASON,
    )


def _path_reference(call: Call, name: str) -> str:
    value = call.path_params.get(name, "")
    if not protocol.is_valid_reference(value):
        raise CardApiError.invalid(f"the path's {name} is not a valid reference")
    return value


def _reference(fields: Mapping[str, object], name: str) -> str:
    value = fields.get(name)
    if not protocol.is_valid_reference(value):
        raise CardApiError.invalid(
            f"{name} must be 1 to {protocol.REFERENCE_LENGTH_MAX} printable characters"
        )
    return value


def _amount(fields: Mapping[str, object]) -> tuple[int, str]:
    amount = fields.get("amount")
    if not isinstance(amount, dict):
        raise CardApiError.invalid("amount must be an object with value and currency")
    value, currency = amount.get("value"), amount.get("currency")
    if not protocol.is_valid_amount_value(value):
        raise CardApiError.invalid("amount.value must be a positive integer of minor units")
    if not protocol.is_valid_currency(currency):
        raise CardApiError.invalid("amount.currency must be an ISO 4217 code")
    return value, currency


def _text(fields: Mapping[str, object], name: str, length_max: int) -> str:
    """An optional string field; absent means empty."""
    value = fields.get(name, "")
    if not isinstance(value, str) or len(value) > length_max:
        raise CardApiError.invalid(f"{name} must be a string of at most {length_max} characters")
    return value


def _notify_url(fields: Mapping[str, object]) -> str:
    value = fields.get("notifyUrl")
    if (
        not isinstance(value, str)
        or not value.startswith(("http://", "https://"))
        or len(value) > NOTIFY_URL_LENGTH_MAX
    ):
        raise CardApiError.invalid(
            f"notifyUrl must be an http(s) URL of at most {NOTIFY_URL_LENGTH_MAX} characters"
        )
    return value


def _amount_json(amount_minor: int, currency: str) -> dict[str, object]:
    return {"value": amount_minor, "currency": currency}


def _timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC, to the second, with its offset, as the acquirer writes dates."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")
