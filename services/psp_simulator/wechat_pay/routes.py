"""The WeChat-Pay-style channel's HTTP routes (its merchant API and the payer's pages):
they read the raw request, let `state.WeChatPaySimulator` authenticate and answer it,
and sign the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.common.clock import Clock
from services.gateway.channels import wechat_pay_protocol as protocol
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.request_body import read_body_at_most
from services.psp_simulator.store import (
    TradeNotPayable,
    UnknownTrade,
)
from services.psp_simulator.wechat_pay.state import (
    Answer,
    RequestProblem,
    WeChatPaySimulator,
    WeChatPayStore,
    error_answer,
    pay_page,
    signature_headers,
)

REQUEST_BYTES_MAX: Final = protocol.BODY_BYTES_MAX


def create_router(context: SimulatorContext) -> APIRouter:
    """The WeChat-Pay-style channel's routes: its merchant API and the payer's pages."""
    settings = context.settings
    simulator = WeChatPaySimulator(
        context=context,
        store=WeChatPayStore(settings.trade_count_max),
        keys_by_mch_id={settings.wechat_pay_mch_id: settings.wechat_pay_api_v3_key},
    )

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await simulator.stop()

    app = APIRouter(lifespan=lifespan)

    async def signed_call(
        request: Request, handle: Callable[[str, str, bytes], Answer]
    ) -> Response:
        """Authenticate the request, run `handle(mch_id, key, body)`, sign its answer."""
        body = await read_body_at_most(request, REQUEST_BYTES_MAX)
        if body is None:
            return _render(
                error_answer(413, protocol.CODE_PARAM_ERROR, "body is too large", signed=False),
                "",
                context.clock,
            )
        try:
            mch_id, key = simulator.authenticate(
                method=request.method,
                target=_request_target(request),
                authorization=request.headers.get("authorization", ""),
                body=body,
            )
        except RequestProblem as problem:
            return _render(problem.answer, "", context.clock)
        return _render(handle(mch_id, key, body), key, context.clock)

    @app.post(protocol.NATIVE_PAY_PATH)
    async def native_pay(request: Request) -> Response:
        return await signed_call(
            request, lambda mch_id, _key, body: simulator.native_pay(mch_id, body)
        )

    @app.get(protocol.TRADE_BY_OUT_TRADE_NO_PATH_PREFIX + "{out_trade_no}")
    async def query_trade(out_trade_no: str, request: Request) -> Response:
        mchid_parameter = request.query_params.get("mchid", "")
        return await signed_call(
            request,
            lambda mch_id, _key, _body: simulator.query_trade(
                mch_id, out_trade_no, mchid_parameter
            ),
        )

    @app.post(
        protocol.TRADE_BY_OUT_TRADE_NO_PATH_PREFIX + "{out_trade_no}" + protocol.CLOSE_PATH_SUFFIX
    )
    async def close_trade(out_trade_no: str, request: Request) -> Response:
        return await signed_call(
            request,
            lambda mch_id, _key, body: simulator.close_trade(mch_id, out_trade_no, body),
        )

    @app.post(protocol.REFUNDS_PATH)
    async def refund(request: Request) -> Response:
        return await signed_call(request, simulator.refund)

    @app.get(protocol.REFUNDS_PATH + "/{out_refund_no}")
    async def query_refund(out_refund_no: str, request: Request) -> Response:
        return await signed_call(
            request,
            lambda mch_id, _key, _body: simulator.query_refund(mch_id, out_refund_no),
        )

    @app.get(protocol.PAYER_PAY_PATH_PREFIX + "{pay_token}")
    async def show_pay_page(pay_token: str) -> Response:
        trade = simulator.store.find_trade_by_token(pay_token)
        if trade is None:
            return JSONResponse({"detail": "unknown trade"}, status_code=404)
        return HTMLResponse(pay_page(trade))

    @app.post(protocol.PAYER_PAY_PATH_PREFIX + "{pay_token}")
    async def pay(pay_token: str, request: Request) -> Response:
        try:
            trade = simulator.pay(pay_token)
        except UnknownTrade:
            return JSONResponse({"detail": "unknown trade"}, status_code=404)
        except TradeNotPayable as error:
            return JSONResponse({"detail": str(error)}, status_code=409)
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(pay_page(trade))
        return JSONResponse(
            {"trade_state": trade.trade_state, "transaction_id": trade.transaction_id}
        )

    return app


def _render(answer: Answer, key: str, clock: Clock) -> Response:
    """The HTTP response of `answer`, signed under `key` unless it must not be."""
    body = b"" if answer.payload is None else protocol.dumps(answer.payload)
    headers: dict[str, str] = {}
    if answer.signed:
        headers = signature_headers(int(clock.now().timestamp()), body, key)
    return Response(
        content=body,
        status_code=answer.status_code,
        media_type="application/json" if answer.payload is not None else None,
        headers=headers,
    )


def _request_target(request: Request) -> str:
    """The path and query exactly as the client sent them, which is what it signed."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
