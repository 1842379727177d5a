"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client for one test, closed when the test ends."""
    async with httpx.AsyncClient() as client:
        yield client
