"""Cursor pagination shared by the list endpoints: newest first, `starting_after` an id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field

from services.common.db import Connection
from services.gateway.problems import ApiProblem

LIMIT_DEFAULT = 20
LIMIT_MAX = 100

Limit = Annotated[int, Query(ge=1, le=LIMIT_MAX, description="Items per page.")]
StartingAfter = Annotated[
    str | None,
    Query(max_length=128, description="Cursor: the id of the last item of the previous page."),
]


CreatedGte = Annotated[
    datetime | None, Query(alias="created[gte]", description="Created at or after (ISO 8601).")
]
CreatedLt = Annotated[
    datetime | None, Query(alias="created[lt]", description="Created before (ISO 8601).")
]


def check_filter(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    """Raise a 422 problem when a filter names a value the list can never hold."""
    if value is not None and value not in allowed:
        raise ApiProblem(
            422, "invalid_request", f"Unknown {name}", f"{name} must be one of {allowed}"
        )


class Page(BaseModel):
    object: str = "list"
    data: list[Any]
    has_more: bool
    next_cursor: str | None = Field(
        description="Pass as `starting_after` for the next page; null on the last page."
    )


def page_of(rows: list[Any], limit: int, id_of: str) -> tuple[list[Any], bool, str | None]:
    """Split `limit + 1` fetched rows into one page, whether more exist, and the cursor."""
    has_more = len(rows) > limit
    page = rows[:limit]
    return page, has_more, (page[-1][id_of] if has_more and page else None)


def unknown_cursor(cursor: str) -> ApiProblem:
    return ApiProblem(
        422, "invalid_cursor", "Invalid cursor", f"starting_after {cursor!r} is not in this list."
    )


async def fetch_merchant_page(
    connection: Connection,
    table: str,
    id_column: str,
    merchant_id: str,
    *,
    starting_after: str | None,
    limit: int,
) -> tuple[list[Any], bool, str | None]:
    """One page of a merchant's rows of `table`, newest first by (created_at, id).

    `table` and `id_column` are the caller's constants, never request input. Raises the
    `invalid_cursor` problem when `starting_after` is not one of the merchant's rows.
    """
    if starting_after is not None and not await connection.fetchval(
        f"SELECT true FROM {table} WHERE {id_column} = $1 AND merchant_id = $2",
        starting_after,
        merchant_id,
    ):
        raise unknown_cursor(starting_after)
    rows = await connection.fetch(
        f"SELECT * FROM {table} WHERE merchant_id = $1"
        f" AND ($2::text IS NULL OR (created_at, {id_column}) <"
        f"      (SELECT created_at, {id_column} FROM {table} WHERE {id_column} = $2))"
        f" ORDER BY created_at DESC, {id_column} DESC LIMIT $3",
        merchant_id,
        starting_after,
        limit + 1,
    )
    return page_of(list(rows), limit, id_column)
