"""The card channel's HTTP routes: each reads the request into a `state.Call`, runs one
operation of `state.CardSimulator` and turns its answer or error into JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.channels import card_protocol as protocol
from services.psp_simulator.card.state import (
    REQUEST_BYTES_MAX,
    Answer,
    Call,
    CardApiError,
    CardSimulator,
    CardStore,
    CardStoreError,
    RefundFinisher,
)
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.request_body import read_json_at_most


def create_router(context: SimulatorContext) -> APIRouter:
    """The card channel's routes; its lifespan cancels refunds still processing."""
    simulator = CardSimulator(
        context=context,
        store=CardStore(context.settings.trade_count_max),
        finisher=RefundFinisher(),
    )

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        # Nested inside the app's lifespan, so this ends before the notification sender
        # closes: no refund finishes after its webhook can no longer be sent.
        try:
            yield
        finally:
            await simulator.finisher.close()

    app = APIRouter(lifespan=lifespan)
    payments_by_reference = "/card/v1/payments/by-reference/{reference:path}"

    @app.post(protocol.PAYMENTS_PATH)
    async def authorise(request: Request) -> JSONResponse:
        return await _respond(request, simulator.authorise, with_body=True)

    @app.post(protocol.PAYMENTS_PATH + "/{psp_reference}/captures")
    async def capture(request: Request) -> JSONResponse:
        return await _respond(request, simulator.capture, with_body=True)

    @app.post(protocol.PAYMENTS_PATH + "/{psp_reference}/refunds")
    async def refund_by_psp_reference(request: Request) -> JSONResponse:
        return await _respond(request, simulator.refund, with_body=True)

    @app.get(payments_by_reference)
    async def query_payment(request: Request) -> JSONResponse:
        return await _respond(request, simulator.query_payment, with_body=False)

    @app.post(payments_by_reference + "/cancels")
    async def cancel(request: Request) -> JSONResponse:
        return await _respond(request, simulator.cancel, with_body=True)

    @app.post(payments_by_reference + "/refunds")
    async def refund_by_reference(request: Request) -> JSONResponse:
        return await _respond(request, simulator.refund, with_body=True)

    @app.get("/card/v1/refunds/by-reference/{reference:path}")
    async def query_refund(request: Request) -> JSONResponse:
        return await _respond(request, simulator.query_refund, with_body=False)

    return app


async def _respond(
    request: Request, operation: Callable[[Call], Answer], *, with_body: bool
) -> JSONResponse:
    """Run one operation on the request and turn its answer or error into JSON."""
    call = Call(
        api_key=request.headers.get(protocol.API_KEY_HEADER),
        idempotency_key=request.headers.get(protocol.IDEMPOTENCY_KEY_HEADER),
        path_params={name: str(value) for name, value in request.path_params.items()},
        body=await read_json_at_most(request, REQUEST_BYTES_MAX) if with_body else None,
    )
    try:
        answer = operation(call)
    except CardStoreError as error:
        answer = _error_answer(CardApiError.of(error))
    except CardApiError as error:
        answer = _error_answer(error)
    return JSONResponse(dict(answer.body), status_code=answer.status_code)


def _error_answer(error: CardApiError) -> Answer:
    return Answer(
        error.status_code,
        {"status": error.status_code, "errorCode": error.error_code, "message": error.message},
    )
