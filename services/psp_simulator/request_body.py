"""Bounded reads of a request's body, shared by every simulated channel's routes.

A body is read chunk by chunk and reading stops as soon as it is longer than the route's
limit, so an oversized request costs the simulator no more than the limit's memory.
"""

from __future__ import annotations

import json

from fastapi import Request


async def read_body_at_most(request: Request, byte_count_max: int) -> bytes | None:
    """Return the raw body, or None as soon as it exceeds `byte_count_max` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > byte_count_max:
            return None
    return bytes(body)


async def read_json_at_most(request: Request, byte_count_max: int) -> object:
    """Return the decoded JSON body, or None when it is larger than `byte_count_max`
    bytes or is not JSON."""
    body = await read_body_at_most(request, byte_count_max)
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
