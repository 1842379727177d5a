"""The Alipay-style channel's HTTP routes (its API and the payer's pages); they only
translate to and from `state.AlipaySimulator`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.gateway.channels import alipay_protocol as protocol
from services.psp_simulator.alipay.state import (
    AlipaySimulator,
    pay_page,
)
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.request_body import read_json_at_most
from services.psp_simulator.store import (
    TradeNotPayable,
    TradeStore,
    UnknownTrade,
)

REQUEST_BYTES_MAX: Final = 64 * 1024


def create_router(context: SimulatorContext) -> APIRouter:
    """The Alipay-style channel's routes: its API and the payer's pages."""
    settings = context.settings
    simulator = AlipaySimulator(
        context=context,
        store=TradeStore(settings.trade_count_max),
        secrets_by_app_id={settings.alipay_app_id: settings.alipay_secret},
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Included in the app's lifespan, inside it: this ends before the notification
        # sender closes, so no refund finishes without a sender to notify it.
        try:
            yield
        finally:
            simulator.cancel_pending_refunds()

    app = APIRouter(lifespan=lifespan)

    @app.post(protocol.PRECREATE_PATH)
    async def precreate(request: Request) -> JSONResponse:
        body = await read_json_at_most(request, REQUEST_BYTES_MAX)
        return JSONResponse(simulator.precreate(body))

    @app.post(protocol.CLOSE_PATH)
    async def close(request: Request) -> JSONResponse:
        body = await read_json_at_most(request, REQUEST_BYTES_MAX)
        return JSONResponse(simulator.close(body))

    @app.post(protocol.REFUND_PATH)
    async def refund(request: Request) -> JSONResponse:
        body = await read_json_at_most(request, REQUEST_BYTES_MAX)
        return JSONResponse(simulator.refund(body))

    @app.get(protocol.REFUND_QUERY_PATH_PREFIX + "{out_request_no}")
    async def query_refund(
        out_request_no: str, app_id: str = "", out_trade_no: str = ""
    ) -> JSONResponse:
        return JSONResponse(simulator.query_refund(app_id, out_request_no, out_trade_no))

    @app.get(protocol.TRADE_QUERY_PATH_PREFIX + "{out_trade_no}")
    async def query(out_trade_no: str, app_id: str = "") -> JSONResponse:
        return JSONResponse(simulator.query(app_id, out_trade_no))

    @app.get("/pay/{trade_no}")
    async def show_pay_page(trade_no: str) -> Response:
        trade = simulator.store.find_by_trade_no(trade_no)
        if trade is None:
            return JSONResponse({"detail": "unknown trade"}, status_code=404)
        return HTMLResponse(pay_page(trade))

    @app.get("/qr/{trade_no}")
    async def follow_qr_code(trade_no: str) -> Response:
        # A real QR code encodes a URL the payer's wallet opens; a browser gets the pay page.
        return RedirectResponse(f"/pay/{trade_no}", status_code=307)

    @app.post("/pay/{trade_no}")
    async def pay(trade_no: str, request: Request) -> Response:
        try:
            trade = simulator.pay(trade_no)
        except UnknownTrade:
            return JSONResponse({"detail": "unknown trade"}, status_code=404)
        except TradeNotPayable as error:
            return JSONResponse({"detail": str(error)}, status_code=409)
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(pay_page(trade))
        return JSONResponse({"trade_no": trade.trade_no, "trade_status": trade.trade_status})

    return app
