"""The bank side of the fault suite: the connector (in-process, behind a real listener)
against the real PSP simulator's bank rail, broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import httpx

from schemas import new_command
from schemas.payouts import BankPayoutRequest, SubmitBankPayout
from services.common.settings import ServiceSettings
from tests.faults.conftest import Tally
from tests.integration.test_connector import running_connector
from tests.support.polling import wait_until
from tests.support.psp import set_faults


async def test_a_payout_the_bank_executed_but_answered_429_then_503_is_paid_once(
    settings: ServiceSettings, http_client: httpx.AsyncClient, tally: list[Tally]
) -> None:
    async with running_connector(settings) as connector:
        await set_faults(http_client, connector.psp_url, "bank", answers_after_work=[429, 503])
        payout_id = f"po_{uuid.uuid4().hex}"
        await connector.send(
            new_command(
                SubmitBankPayout,
                BankPayoutRequest(payout_id=payout_id, amount_minor=12_300, currency="CNY"),
                aggregate_id=payout_id,
                merchant_id="mch_faults",
                producer="ledger",
                issued_at=datetime.now(UTC),
                correlation_id=payout_id,
                causation_id=None,
            )
        )

        async def final() -> bool:
            recorded = await connector.recorded(payout_id)
            return "BankPayoutPaid" in recorded or "BankPayoutFailed" in recorded

        await wait_until(final, timeout_s=30, what="the payout's final result")
        recorded = await connector.recorded(payout_id)
        listed = await http_client.get(
            f"{connector.psp_url}/bank/v1/payouts/{payout_id}",
            headers={"X-API-Key": "bank-sandbox-api-key"},
        )
        sent = await _bank_payouts(settings.database_url, payout_id)
    entry = Tally(
        "3 bank executes payout, answers 429 then 503",
        lost=int("BankPayoutPaid" not in recorded or listed.status_code != 200),
        doubled=max(recorded.count("BankPayoutPaid") - 1, 0) + max(sent - 1, 0),
        stuck=0,
        note="paid once; no BankPayoutFailed" if recorded == ["BankPayoutPaid"] else str(recorded),
    )
    tally.append(entry)
    assert entry.clean and recorded == ["BankPayoutPaid"], (entry, recorded)


async def _bank_payouts(database_url: str, payout_id: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM gateway.bank_payouts WHERE payout_id = $1", payout_id
            )
        )
    finally:
        await connection.close()
