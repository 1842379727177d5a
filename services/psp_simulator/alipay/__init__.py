"""The PSP simulator's Alipay-style channel, as payrail's gateway reaches it.

Routes:
- `POST /alipay/v1/trades/precreate`: create (or find again) a trade; signed JSON answer.
- `POST /alipay/v1/trades/close`: close a trade still waiting for payment; signed JSON answer.
- `GET /alipay/v1/trades/{out_trade_no}?app_id=...`: query a trade; signed JSON answer.
- `POST /alipay/v1/trades/refund`: accept a refund of a paid trade; signed JSON answer.
  The refund finishes `refund_processing_ms` later (REFUND_SUCCESS, or REFUND_FAIL under
  the `fail_refunds` fault) and its result is notified (`refund_status_sync`) to the
  refund's own notify_url.
- `GET /alipay/v1/refunds/{out_request_no}?app_id=...&out_trade_no=...`: query a refund;
  signed JSON answer.
- `GET /pay/{trade_no}`: the payer's page; `POST /pay/{trade_no}`: the payer pays.

A refunded trade keeps its status TRADE_SUCCESS, even when fully refunded: a query of the
payment keeps proving that the payer paid, and refunds are reported on their own. A paid
trade still cannot be closed.

Business failures answer HTTP 200 with `code` 40004 and a `sub_code`, like the real API.
A failure is signed only when the request's own signature verified: otherwise the caller
may not hold the secret, and the PSP may not even know the app id.
"""

from services.psp_simulator.alipay.routes import create_router

__all__ = ["create_router"]
