"""RFC 9457 problem details with a stable `code` for every error the API returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_TYPE_BASE = "https://payrail.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code.")
    errors: list[FieldError] = []


class ApiProblem(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str = "") -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail or title


def problem_response(
    status: int, code: str, title: str, detail: str, errors: list[FieldError] | None = None
) -> JSONResponse:
    body = Problem(
        type=f"{PROBLEM_TYPE_BASE}{code}",
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=errors or [],
    )
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


# Field-specific codes let clients react without parsing messages.
_FIELD_CODES = {"currency": "unsupported_currency", "amount": "invalid_amount"}


def classify_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, list[FieldError]]:
    """Pick one stable code for a list of pydantic errors and flatten them for the client."""
    fields = [
        FieldError(
            field=".".join(str(part) for part in error["loc"] if part != "body"),
            message=str(error["msg"]),
        )
        for error in errors
    ]
    if any(error["type"] == "json_invalid" for error in errors):
        return "invalid_json", fields
    for error in errors:
        location = [str(part) for part in error["loc"]]
        for name, code in _FIELD_CODES.items():
            if name in location:
                return code, fields
    return "invalid_request", fields


def install_problem_handlers(app: FastAPI) -> None:
    @app.middleware("http")
    async def refuse_nul_in_url(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # PostgreSQL text cannot hold NUL: a path or query value carrying one could never
        # name anything, so it is refused before any handler passes it to the database.
        values = [request.url.path, *request.query_params.values()]
        if any("\x00" in value for value in values):
            return problem_response(
                422, "invalid_request", "Invalid request", "URLs must not contain NUL (%00)."
            )
        return await call_next(request)

    @app.exception_handler(ApiProblem)
    async def on_api_problem(_: Request, problem: ApiProblem) -> JSONResponse:
        return problem_response(problem.status, problem.code, problem.title, problem.detail)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        code, fields = classify_validation_errors(list(error.errors()))
        return problem_response(422, code, "The request is invalid", fields[0].message, fields)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return problem_response(error.status_code, code, str(error.detail), str(error.detail))


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": description}
    for status, description in (
        (401, "Missing or invalid API key"),
        (403, "Merchant suspended, or the admin key is required"),
        (404, "Not found"),
        (409, "Conflict with the resource's state"),
        (422, "Invalid request"),
        (503, "A service behind the API is unavailable"),
    )
}
