"""The bank rail's state and behaviour: payouts in memory, bounded by `trade_count_max`,
and the tasks that finish and notify them. The routes (`routes.py`) only translate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from dataclasses import dataclass

import structlog
from fastapi.responses import JSONResponse

from services.gateway.channels import bank_protocol as protocol
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.faults import BANK_RAIL
from services.psp_simulator.notifier import OutboundNotification, RenderedAttempt

logger = structlog.get_logger(__name__)


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


def error_response(status_code: int, code: str, message: str) -> JSONResponse:
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
                return error_response(
                    422,
                    protocol.ERROR_REFERENCE_CONFLICT,
                    f"payout {instruction.reference} exists with another amount or currency",
                )
            return JSONResponse(known.answer(), status_code=202)
        if len(self.payouts) >= self.context.settings.trade_count_max:
            return error_response(503, "store_full", "the bank rail holds its maximum of payouts")
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
