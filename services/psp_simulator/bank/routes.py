"""The bank rail's HTTP routes: create and query payouts, with the API key checked first."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.gateway.channels import bank_protocol as protocol
from services.psp_simulator.bank.state import (
    BankRail,
    error_response,
)
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.request_body import read_body_at_most

REQUEST_BYTES_MAX = 16 * 1024


def create_router(context: SimulatorContext) -> APIRouter:
    """The bank rail's routes; its lifespan cancels payouts still processing."""
    rail = BankRail(context)

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await rail.close()

    router = APIRouter(lifespan=lifespan)

    def authorised(request: Request) -> bool:
        presented = request.headers.get(protocol.API_KEY_HEADER, "")
        return secrets.compare_digest(presented, context.settings.bank_api_key)

    @router.post(protocol.PAYOUTS_PATH)
    async def create_payout(request: Request) -> JSONResponse:
        if not authorised(request):
            return error_response(401, protocol.ERROR_UNAUTHORIZED, "wrong or missing API key")
        body = await read_body_at_most(request, REQUEST_BYTES_MAX)
        if body is None:
            return error_response(422, protocol.ERROR_INVALID_REQUEST, "request too large")
        try:
            instruction = protocol.PayoutInstruction.model_validate(json.loads(body))
        except (ValueError, ValidationError) as error:
            return error_response(422, protocol.ERROR_INVALID_REQUEST, str(error)[:500])
        return rail.accept(instruction)

    @router.get(protocol.PAYOUTS_PATH + "/{reference}")
    async def get_payout(reference: str, request: Request) -> JSONResponse:
        if not authorised(request):
            return error_response(401, protocol.ERROR_UNAUTHORIZED, "wrong or missing API key")
        payout = rail.payouts.get(reference)
        if payout is None:
            return error_response(404, protocol.ERROR_NOT_FOUND, f"no payout {reference}")
        return JSONResponse(payout.answer())

    return router
