"""Wiring of the ledger process: its consumers, its routes and the shared runtime.

Nothing connects at import time: `create_app` only builds the app; the database pool,
the broker and the outbox relay start in the app's lifespan.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel

from schemas import Event, Topic
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.ledger.domain import ENTRY_RULES
from services.ledger.handlers import BALANCES_LIMIT_MAX, post_event, read_balances
from services.ledger.settings import LedgerSettings

SERVICE_NAME = "ledger"


class AccountBalanceView(BaseModel):
    """An account's balance in one currency; debits positive, credits negative."""

    account_id: str
    currency: str
    balance_minor: int


async def wire_ledger(context: ServiceContext) -> None:
    """Subscribe the ledger's consumers; each applies an event exactly once."""

    async def post(connection: asyncpg.Connection, event: Event) -> None:
        await post_event(connection, event, clock=context.clock)

    context.consume(Topic.PAYMENTS_EVENTS, dict.fromkeys(ENTRY_RULES, post))


def _add_internal_routes(app: FastAPI) -> None:
    @app.get("/internal/v1/balances", response_model=list[AccountBalanceView])
    async def list_balances(
        request: Request,
        account_prefix: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=BALANCES_LIMIT_MAX)] = 1000,
    ) -> list[AccountBalanceView]:
        """Balances of the accounts whose id starts with `account_prefix` (read-only).

        Raw sums of postings: a merchant's pending balance is the negation of its row.
        """
        context: ServiceContext = request.app.state.context
        balances = await read_balances(context.pool, account_prefix, limit=limit)
        return [
            AccountBalanceView(
                account_id=balance.account_id,
                currency=balance.currency,
                balance_minor=balance.balance_minor,
            )
            for balance in balances
        ]


def create_app(settings: LedgerSettings | None = None, clock: Clock | None = None) -> FastAPI:
    """The ledger's ASGI app; run its lifespan to start consuming and publishing."""
    ledger_settings = settings or LedgerSettings()
    app = create_service_app(
        SERVICE_NAME,
        ledger_settings,
        migration_packages=["services.ledger.migrations"],
        wiring=wire_ledger,
        clock=clock,
        app=FastAPI(title="payrail ledger"),
    )
    _add_internal_routes(app)
    return app
