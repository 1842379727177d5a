"""The bank rail client against the real PSP simulator over HTTP on 127.0.0.1: a payout
is accepted once per reference, paid (or failed under the `fail_payouts` fault) a moment
later, and its signed notification verifies; a forged one does not. Only an invalid
request is a refusal: a rail that took the payout and answered 429 or 503 leaves it
unknown, and sending it again pays it once."""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.channels.bank import BankRailClient
from services.gateway.channels.base import ChannelRejected, ChannelUnavailable, InvalidNotification
from tests.support import servers
from tests.support.psp import set_faults
from tests.support.servers import NotifyReceiver, running_receiver, wait_until

pytestmark = pytest.mark.integration

NOTIFY_TIMEOUT_S = 10.0


class Receiver(NotifyReceiver):
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    async def receive(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        self.headers.append(dict(request.headers))
        return Response(status_code=204)


def running_bank() -> AbstractAsyncContextManager[str]:
    return servers.running_simulator(
        bank_api_key="bank-key", bank_hmac_key="bank-hmac", payout_processing_ms=20
    )


def rail(
    psp_url: str, notify_url: str, http: httpx.AsyncClient, **overrides: Any
) -> BankRailClient:
    arguments: dict[str, Any] = {
        "base_url": psp_url,
        "api_key": "bank-key",
        "hmac_key": "bank-hmac",
        "notify_url": notify_url,
        "http_client": http,
        "timeout_s": 5.0,
        **overrides,
    }
    return BankRailClient(**arguments)


async def test_a_payout_is_accepted_once_then_paid_with_a_signed_notification(
    http_client: httpx.AsyncClient,
) -> None:
    receiver = Receiver()
    async with (
        running_bank() as psp_url,
        running_receiver(receiver) as notify_url,
    ):
        client = rail(psp_url, notify_url, http_client)
        payout_id = f"po_{uuid.uuid4().hex}"
        first = await client.send_payout(
            payout_id=payout_id, amount_minor=12_951, currency="CNY", beneficiary="mch_1"
        )
        again = await client.send_payout(
            payout_id=payout_id, amount_minor=12_951, currency="CNY", beneficiary="mch_1"
        )
        assert first == again
        # The same id with other terms: a transfer under that id exists and may be paid, so
        # the answer is no refusal of this payout.
        with pytest.raises(ChannelUnavailable, match="reference_conflict"):
            await client.send_payout(
                payout_id=payout_id, amount_minor=1, currency="CNY", beneficiary="mch_1"
            )
        await wait_until(lambda: bool(receiver.bodies), what="notified", timeout_s=NOTIFY_TIMEOUT_S)
        result = client.read_notification(receiver.bodies[0], receiver.headers[0])
        assert (result.payout_id, result.paid, result.bank_reference) == (payout_id, True, first)
        assert len(receiver.bodies) == 1  # acknowledged: sent once

        forged = json.loads(receiver.bodies[0])
        forged["status"] = "failed"
        with pytest.raises(InvalidNotification) as invalid:
            client.read_notification(json.dumps(forged).encode(), receiver.headers[0])
        assert invalid.value.reason == "bad_signature"
        wrong_key = rail(psp_url, notify_url, http_client, hmac_key="other")
        with pytest.raises(InvalidNotification):
            wrong_key.read_notification(receiver.bodies[0], receiver.headers[0])


async def test_payouts_fail_under_the_fault_and_an_outage_is_unknown_not_refused(
    http_client: httpx.AsyncClient,
) -> None:
    receiver = Receiver()
    async with (
        running_bank() as psp_url,
        running_receiver(receiver) as notify_url,
    ):
        client = rail(psp_url, notify_url, http_client)
        await set_faults(http_client, psp_url, "bank", fail_payouts=True)
        payout_id = f"po_{uuid.uuid4().hex}"
        await client.send_payout(
            payout_id=payout_id, amount_minor=500, currency="CNY", beneficiary="mch_1"
        )
        await wait_until(lambda: bool(receiver.bodies), what="notified", timeout_s=NOTIFY_TIMEOUT_S)
        result = client.read_notification(receiver.bodies[0], receiver.headers[0])
        assert (result.paid, result.failure_code) == (False, "account_closed")

        await set_faults(http_client, psp_url, "bank", unavailable=True)
        with pytest.raises(ChannelUnavailable):
            await client.send_payout(
                payout_id=f"po_{uuid.uuid4().hex}",
                amount_minor=500,
                currency="CNY",
                beneficiary="mch_1",
            )
        await set_faults(http_client, psp_url, "bank")
        wrong_key = rail(psp_url, notify_url, http_client, api_key="nope")
        with pytest.raises(ChannelUnavailable):  # a 401 is our misconfiguration: retry later
            await wrong_key.send_payout(
                payout_id=f"po_{uuid.uuid4().hex}",
                amount_minor=500,
                currency="CNY",
                beneficiary="mch_1",
            )


async def test_a_payout_the_rail_took_but_answered_429_then_503_is_unknown_and_paid_once(
    http_client: httpx.AsyncClient,
) -> None:
    receiver = Receiver()
    async with (
        running_bank() as psp_url,
        running_receiver(receiver) as notify_url,
    ):
        client = rail(psp_url, notify_url, http_client)
        await set_faults(http_client, psp_url, "bank", answers_after_work=[429, 503])
        payout_id = f"po_{uuid.uuid4().hex}"
        for _ in range(2):
            # The rail created the transfer, then said 429 (and 503 on the retry): neither
            # is a refusal, so the payout must not be recorded failed and paid again.
            with pytest.raises(ChannelUnavailable, match=r"HTTP (429|503)"):
                await client.send_payout(
                    payout_id=payout_id, amount_minor=700, currency="CNY", beneficiary="mch_1"
                )
        bank_reference = await client.send_payout(
            payout_id=payout_id, amount_minor=700, currency="CNY", beneficiary="mch_1"
        )
        await wait_until(lambda: bool(receiver.bodies), what="notified", timeout_s=NOTIFY_TIMEOUT_S)
        result = client.read_notification(receiver.bodies[0], receiver.headers[0])
        assert (result.payout_id, result.paid, result.bank_reference) == (
            payout_id,
            True,
            bank_reference,
        )
        listed = await http_client.get(
            f"{psp_url}/bank/v1/payouts/{payout_id}", headers={"X-API-Key": "bank-key"}
        )
        assert listed.status_code == 200 and listed.json()["bank_reference"] == bank_reference
        assert len(receiver.bodies) == 1  # one transfer, notified once


@pytest.mark.parametrize("status", [403, 404, 408, 409, 425, 429])
async def test_an_ambiguous_client_error_is_unknown_not_a_refusal(
    http_client: httpx.AsyncClient, status: int
) -> None:
    async with running_bank() as psp_url:
        client = rail(psp_url, "http://127.0.0.1:9/unused", http_client)
        await set_faults(http_client, psp_url, "bank", answers_after_work=[status])
        with pytest.raises(ChannelUnavailable):
            await client.send_payout(
                payout_id=f"po_{uuid.uuid4().hex}",
                amount_minor=700,
                currency="CNY",
                beneficiary="mch_1",
            )


async def test_an_invalid_request_answer_is_a_refusal(http_client: httpx.AsyncClient) -> None:
    async with running_bank() as psp_url:
        client = rail(psp_url, "http://127.0.0.1:9/unused", http_client)
        await set_faults(http_client, psp_url, "bank", answers_after_work=[422])
        with pytest.raises(ChannelRejected) as refused:
            await client.send_payout(
                payout_id=f"po_{uuid.uuid4().hex}",
                amount_minor=700,
                currency="CNY",
                beneficiary="mch_1",
            )
        assert refused.value.code == "fault_answer"
