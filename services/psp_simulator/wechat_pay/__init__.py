"""The PSP simulator's WeChat-Pay-style channel (APIv3 shapes, HMAC-SHA256 signatures).

Routes of the merchant API (every request signed, see `wechat_pay_protocol`):
- `POST /wechatpay/v3/pay/transactions/native`: create (or find again) a native-pay trade;
- `GET /wechatpay/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=…`: query it;
- `POST /wechatpay/v3/pay/transactions/out-trade-no/{out_trade_no}/close`: close it (204);
- `POST /wechatpay/v3/refund/domestic/refunds`: refund part or all of a paid trade;
- `GET /wechatpay/v3/refund/domestic/refunds/{out_refund_no}`: query a refund.

The payer's side: `GET /wx/pay/{token}` shows the trade, `POST /wx/pay/{token}` pays it.

Failures answer a 4xx or 5xx status with `{"code", "message"}`, like the real API. Every
answer is signed, except the 401 that refuses a request's own authentication: its sender
may not hold the key, and signing for it would hand out signed samples.

A trade is paid when the payer pays; its TRANSACTION.SUCCESS notification goes to the
trade's notify_url. A refund is accepted as PROCESSING and finishes after
`refund_processing_ms` as SUCCESS (or ABNORMAL with the `fail_refunds` fault), then its
REFUND.* notification goes to the refund's notify_url.
"""

from services.psp_simulator.wechat_pay.routes import create_router

__all__ = ["create_router"]
