"""The PSP simulator's bank rail: credit transfers to merchants' bank accounts.

See `services.gateway.channels.bank_protocol` for the wire protocol. A payout accepted
now is paid `payout_processing_ms` later, or failed (`account_closed`) when the bank
rail's `fail_payouts` fault was set when it was accepted; the final status is then
notified, signed, on the shared sender's retry schedule. The `lose_notifications` and
`duplicate_notifications` faults apply as for the channels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.gateway.channels import bank_protocol as protocol
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.faults import BANK_RAIL
from services.psp_simulator.notifier import OutboundNotification, RenderedAttempt

logger = structlog.get_logger(__name__)

REQUEST_BYTES_MAX = 16 * 1024


@dataclass(frozen=True)
class BankPayout:
    reference: str
    bank_reference: str
    amount: int
    currency: str
    notify_url: str
    fails: bool
    status: str = protocol.STATUS_PROCESSING

    def answer(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "bank_reference": self.bank_reference,
            "status": self.status,
            "failure_reason": protocol.FAILURE_ACCOUNT_CLOSED
            if self.status == protocol.STATUS_FAILED
            else None,
        }


def _error(status_code: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status_code)


class BankRail:
    """Payouts in memory, bounded by `trade_count_max`, and the tasks that finish them."""

    def __init__(self, context: SimulatorContext) -> None:
        self.context = context
        self.payouts: dict[str, BankPayout] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def accept(self, instruction: protocol.PayoutInstruction) -> JSONResponse:
        known = self.payouts.get(instruction.reference)
        if known is not None:
            if (known.amount, known.currency) != (instruction.amount, instruction.currency):
                return _error(
                    422,
                    protocol.ERROR_REFERENCE_CONFLICT,
                    f"payout {instruction.reference} exists with another amount or currency",
                )
            return JSONResponse(known.answer(), status_code=202)
        if len(self.payouts) >= self.context.settings.trade_count_max:
            return _error(503, "store_full", "the bank rail holds its maximum of payouts")
        payout = BankPayout(
            reference=instruction.reference,
            bank_reference=f"bnk_{secrets.token_hex(8)}",
            amount=instruction.amount,
            currency=instruction.currency,
            notify_url=instruction.notify_url,
            fails=self.context.faults.of(BANK_RAIL).fail_payouts,
        )
        self.payouts[payout.reference] = payout
        task = asyncio.create_task(
            self._finish(payout.reference), name=f"payout-{payout.reference}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        logger.info("bank_payout_accepted", reference=payout.reference, amount=payout.amount)
        return JSONResponse(payout.answer(), status_code=202)

    async def _finish(self, reference: str) -> None:
        await asyncio.sleep(self.context.settings.payout_processing_ms / 1000)
        payout = self.payouts[reference]
        status = protocol.STATUS_FAILED if payout.fails else protocol.STATUS_PAID
        payout = dataclasses.replace(payout, status=status)
        self.payouts[reference] = payout
        logger.info("bank_payout_finished", reference=reference, status=status)
        faults = self.context.faults.of(BANK_RAIL)
        if faults.lose_notifications:
            return
        self.context.running_sender().schedule(
            [self._notification(payout)],
            duplicate=faults.duplicate_notifications,
            reference=reference,
        )

    def _notification(self, payout: BankPayout) -> OutboundNotification:
        key = self.context.settings.bank_hmac_key

        def render(notify_id: str, _now_s: int) -> RenderedAttempt:
            fields = protocol.PayoutNotification(
                notification_id=notify_id,
                reference=payout.reference,
                bank_reference=payout.bank_reference,
                status="failed" if payout.status == protocol.STATUS_FAILED else "paid",
                failure_reason=protocol.FAILURE_ACCOUNT_CLOSED if payout.fails else None,
            )
            body = fields.model_dump_json().encode()
            return RenderedAttempt(
                body=body,
                headers={
                    "content-type": "application/json",
                    protocol.SIGNATURE_HEADER: protocol.signature(body, key),
                },
            )

        return OutboundNotification(
            key=payout.bank_reference,
            url=payout.notify_url,
            render=render,
            acknowledged=lambda status_code, _body: 200 <= status_code < 300,
        )

    async def close(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
            return _error(401, protocol.ERROR_UNAUTHORIZED, "wrong or missing API key")
        body = await request.body()
        if len(body) > REQUEST_BYTES_MAX:
            return _error(422, protocol.ERROR_INVALID_REQUEST, "request too large")
        try:
            instruction = protocol.PayoutInstruction.model_validate(json.loads(body))
        except (ValueError, ValidationError) as error:
            return _error(422, protocol.ERROR_INVALID_REQUEST, str(error)[:500])
        return rail.accept(instruction)

    @router.get(protocol.PAYOUTS_PATH + "/{reference}")
    async def get_payout(reference: str, request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, protocol.ERROR_UNAUTHORIZED, "wrong or missing API key")
        payout = rail.payouts.get(reference)
        if payout is None:
            return _error(404, protocol.ERROR_NOT_FOUND, f"no payout {reference}")
        return JSONResponse(payout.answer())

    return router
