"""The API's one exception handler: domain errors to HTTP statuses and Freight's error body.

Every error is `{"error": message, "error_name": name}` with `Content-Type: application/json`;
an unknown path is `{"error": "Not Found"}` (Freight's catch-all). Statuses live here only.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from freight.errors import (
    Barred,
    CheckFailed,
    Conflict,
    ExternalError,
    Forbidden,
    FreightError,
    InvalidRequest,
    NotFound,
    TooLarge,
    Unauthorized,
)

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of gives its status.
STATUS: list[tuple[type[FreightError], int]] = [
    (TooLarge, 413),
    (NotFound, 404),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Conflict, 409),
    (InvalidRequest, 400),
    (Barred, 400),
    (CheckFailed, 400),
    # A service Freight depends on (git, Prefect, an integration) failed: not Freight's bug.
    (ExternalError, 502),
]
UNAUTHORIZED_MESSAGE = "You are not authorized."


def status_of(error: FreightError) -> int:
    return next((status for kind, status in STATUS if isinstance(error, kind)), 500)


def error_response(status: int, message: str, name: str | None) -> JSONResponse:
    body = {"error": message} if name is None else {"error": message, "error_name": name}
    return JSONResponse(body, status_code=status)


def not_found() -> JSONResponse:
    return error_response(404, "Not Found", None)


async def _freight_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FreightError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    # Freight clients show this exact sentence for a missing or wrong key.
    message = UNAUTHORIZED_MESSAGE if isinstance(exc, Unauthorized) else exc.message
    return error_response(status, message, exc.error_name)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, describe_validation(exc.errors()), "invalid_request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return not_found()
    return error_response(exc.status_code, str(exc.detail), "invalid_request")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "Internal error; see the server log", "internal_error")


def describe_validation(errors: object) -> str:
    """The first problem of a pydantic error list, naming the field: 'limit: ...'."""
    first = next(iter(errors), None) if isinstance(errors, list | tuple) else None
    if not isinstance(first, dict):
        return "Invalid request"
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location[1:] if location[:1] == ["path"] else location)
    problem = {"extra_forbidden": "unknown field", "missing": "required"}.get(
        str(first.get("type")), first.get("msg", "")
    )
    return f"{field}: {problem}" if field else str(problem)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FreightError, _freight_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
