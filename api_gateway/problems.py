"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

MEDIA_TYPE = "application/problem+json"
INTERNAL_ERROR = "Internal error; it has been logged."
# Set on the scope once FastAPI's ServerErrorMiddleware sent our 500 for an exception it
# then re-raises (it always does): the guard (guard.py) logs it and does not answer again.
ANSWERED_500 = "billing.answered_500"


def problem(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Render framework errors (404, 405, validation, unexpected exceptions) as problem
    details too; unexpected exceptions are logged by the guard, not here."""

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(422, "Request validation failed.", errors=exc.errors())

    async def server_error(request: Request, _: Exception) -> JSONResponse:
        request.scope[ANSWERED_500] = True
        return problem(500, INTERNAL_ERROR)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)
