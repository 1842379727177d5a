"""The bank rail client: sends payouts and checks the rail's signed notifications.

Like a channel adapter it never touches the database or the broker; `services.gateway.
payouts` decides what its answers mean for a payout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from services.gateway.channels import bank_protocol as protocol
from services.gateway.channels import wire
from services.gateway.channels.base import ChannelRejected, ChannelUnavailable, InvalidNotification

ANSWER_BYTES_MAX = 16_384
# The only answers that say the rail refused the payout before moving any money: the
# request itself was invalid. Every other status, 4xx included (403, 404, 408, 409, 425,
# 429: a gateway, a proxy or a throttle in front of the rail may answer them after the
# rail accepted the transfer), leaves the outcome unknown, and the payout is sent again
# under the same id, which the rail treats as its idempotency key.
DEFINITE_REFUSAL_STATUSES = frozenset({400, 422})


@dataclass(frozen=True)
class VerifiedPayoutResult:
    """A checked notification: the payout `payout_id` was paid, or failed with a code."""

    notification_id: str
    payout_id: str
    bank_reference: str
    paid: bool
    failure_code: str | None


class BankRailClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        hmac_key: str,
        notify_url: str,
        http_client: httpx.AsyncClient,
        timeout_s: float,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._hmac_key = hmac_key
        self._notify_url = notify_url
        self._http = http_client
        self._timeout = httpx.Timeout(timeout_s)

    async def send_payout(
        self, *, payout_id: str, amount_minor: int, currency: str, beneficiary: str
    ) -> str:
        """Ask the rail to pay; returns its reference for the payout (it finishes later).

        Safe to retry: the payout id is the rail's idempotency key. Raises ChannelRejected
        when the rail refuses the request as invalid (400 or 422), ChannelUnavailable when
        the outcome is unknown (timeout, connection error, any other status, a reference
        conflict, an answer about something else).
        """
        instruction = protocol.PayoutInstruction(
            reference=payout_id,
            amount=amount_minor,
            currency=currency,
            beneficiary=beneficiary,
            notify_url=self._notify_url,
        )
        try:
            async with self._http.stream(
                "POST",
                self._base_url + protocol.PAYOUTS_PATH,
                content=instruction.model_dump_json(),
                headers={"content-type": "application/json", "X-API-Key": self._api_key},
                timeout=self._timeout,
            ) as answer:
                content = await wire.read_at_most(answer, ANSWER_BYTES_MAX)
        except httpx.HTTPError as error:
            raise ChannelUnavailable(f"bank rail: {type(error).__name__}: {error}") from error
        content = wire.body_within_limit(content, what="bank rail answer")
        outcome = wire.classify_status(
            answer.status_code, refusal_statuses=DEFINITE_REFUSAL_STATUSES
        )
        if outcome is wire.AnswerOutcome.UNKNOWN:
            raise wire.unavailable_status("bank rail", answer.status_code)
        try:
            body = json.loads(content)
        except ValueError as error:
            raise ChannelUnavailable("bank rail answer is not JSON") from error
        if not isinstance(body, dict):
            raise ChannelUnavailable("bank rail answer is not an object")
        if outcome is wire.AnswerOutcome.REFUSED:
            code = str(body.get("error", "payout_rejected"))[:48]
            if code == protocol.ERROR_REFERENCE_CONFLICT:
                # A transfer under this payout id exists already, with other terms: it may
                # be paid, so this payout is anything but refused.
                raise ChannelUnavailable(f"bank rail: {code}: {body.get('message', '')}")
            raise ChannelRejected(code, str(body.get("message", "")))
        if body.get("reference") != payout_id or not body.get("bank_reference"):
            raise ChannelUnavailable("bank rail answer is about another payout")
        return str(body["bank_reference"])

    def read_notification(self, body: bytes, headers: Mapping[str, str]) -> VerifiedPayoutResult:
        """Check a notification's signature and fields. `headers` have lowercase names.

        Raises InvalidNotification when it must not be trusted.
        """
        presented = headers.get(protocol.SIGNATURE_HEADER)
        if not presented:
            raise InvalidNotification("missing_signature")
        if not protocol.signature_matches(body, presented, self._hmac_key):
            raise InvalidNotification("bad_signature")
        try:
            notification = protocol.PayoutNotification.model_validate_json(body)
        except ValidationError as error:
            raise InvalidNotification("bad_fields", str(error)[:200]) from error
        paid = notification.status == protocol.STATUS_PAID
        return VerifiedPayoutResult(
            notification_id=notification.notification_id,
            payout_id=notification.reference,
            bank_reference=notification.bank_reference,
            paid=paid,
            failure_code=None if paid else (notification.failure_reason or "payout_failed"),
        )
