"""Helpers for tests that drive the PSP simulator over HTTP: fresh ids, paying as the payer
would, and switching the simulator's faults."""

from __future__ import annotations

import uuid

import httpx

# Every request a helper here sends gives up after this long.
REQUEST_TIMEOUT_S = 5.0


def random_id(prefix: str) -> str:
    """A fresh id: `prefix`, an underscore and 32 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}"


def random_payment_id() -> str:
    """A fresh payment id, `pay_…`."""
    return random_id("pay")


def random_refund_id() -> str:
    """A fresh refund id, `ref_…`."""
    return random_id("ref")


async def pay(http_client: httpx.AsyncClient, pay_url: str) -> httpx.Response:
    """Pay a trade on its simulator pay page, asking for the result as JSON."""
    return await http_client.post(
        pay_url, headers={"accept": "application/json"}, timeout=REQUEST_TIMEOUT_S
    )


async def set_faults(
    http_client: httpx.AsyncClient, psp_url: str, channel: str, **faults: object
) -> None:
    """Replace the simulator's faults for `channel` (e.g. "card") with `faults`.

    With no `faults`, the channel goes back to behaving normally.
    """
    response = await http_client.put(
        f"{psp_url}/_sim/faults/{channel}", json=faults, timeout=REQUEST_TIMEOUT_S
    )
    assert response.status_code == 200, response.text
