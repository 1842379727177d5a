"""The PSP simulator's card channel: an Adyen-style acquirer, as payrail's gateway reaches it.

Routes (JSON; every one needs `X-API-Key`, every POST honours `Idempotency-Key`):
- `POST /card/v1/payments`: authorise a payment; `resultCode` is Authorised or Refused.
- `POST /card/v1/payments/{pspReference}/captures`: capture the whole authorised amount;
  the AUTHORISATION and CAPTURE webhooks follow.
- `GET /card/v1/payments/by-reference/{reference}`: a payment, by merchant reference.
- `POST /card/v1/payments/by-reference/{reference}/cancels`: cancel an uncaptured payment.
- `POST /card/v1/payments/by-reference/{reference}/refunds` and
  `POST /card/v1/payments/{pspReference}/refunds`: refund (part of) a captured payment. The
  refund finishes `refund_processing_ms` later, failed when the `fail_refunds` fault was
  set when it was accepted, and its REFUND webhook follows.
- `GET /card/v1/refunds/by-reference/{reference}`: a refund, by merchant reference.

Errors answer `{"status", "errorCode", "message"}` (see `card_protocol`): 401 for a wrong
API key, 403 for another merchant account, 404 for an unknown payment or refund, 422 for
an invalid request or a refusal, 503 when the simulator is full.

Idempotency keys are scoped per operation (authorise, capture, cancel, refund). The first
successful answer under a key is stored and a repeat of the same request gets it back;
the same key with another request is refused (`idempotency_key_conflict`). Errors are not
stored: a retry is answered afresh, so it succeeds once the cause is gone. Independently
of keys, a payment's or refund's merchant reference names one payment or refund: asking
again with the same amount and currency finds it again, with another is a
`reference_conflict` (checked before the key, so a payment id reused with another amount
is reported as such).

Fault switches (`Channel.CARD`): `decline_payments` refuses new authorisations;
`lose_notifications` sends no webhook; `duplicate_notifications` delivers each webhook
twice; `out_of_order_notifications` delivers AUTHORISATION after CAPTURE (it normally
comes first); `fail_refunds` makes refunds accepted while it is set end failed.
"""

from services.psp_simulator.card.routes import create_router

__all__ = ["create_router"]
