"""Identifier generation. Ids carry a type prefix so a stray id is recognisable in logs."""

from __future__ import annotations

import secrets
import uuid


def new_prefixed_id(prefix: str) -> str:
    """Return `<prefix>_<32 hex chars>`, e.g. `pay_3f2a...`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def new_secret(prefix: str, byte_count: int = 24) -> str:
    """Return a URL-safe random secret with a readable prefix, e.g. `sk_test_...`."""
    return f"{prefix}{secrets.token_urlsafe(byte_count)}"
