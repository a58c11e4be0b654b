"""The entitlement read API: ``/v1/entitlements`` for users, ``/v1/customers/…`` for services.

Handlers return ready JSON bytes; the pydantic models below only document the shapes in
OpenAPI (validating our own output again would cost more than the query at 2,000 req/s).
``serve_fast`` runs the same handlers without FastAPI's routing and dependency layers,
which cost three times the handler itself (bench/e2e); the routes stay on the router
for OpenAPI and for requests the fast path does not match.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from pydantic_core import to_json
from starlette.exceptions import HTTPException

from api_gateway import access_store
from api_gateway.access_store import Grant
from api_gateway.auth import (
    RETRY_AFTER_SECONDS,
    Principal,
    authenticate,
    authenticated,
    require_service_scope,
    service_caller,
)
from api_gateway.guard import ROUTE
from billing_fleet.db import DATABASE_UNAVAILABLE, BoundedPool

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["entitlements"])
T = TypeVar("T")
# The routes' paths under the router's prefix; the fast path names them as FastAPI does.
MINE = "/entitlements"
MINE_ONE = "/entitlements/{feature}"
CUSTOMERS = "/customers/{customer_id}/entitlements"
CUSTOMERS_ONE = "/customers/{customer_id}/entitlements/{feature}"
_TEMPLATES = {path: router.prefix + path for path in (MINE, MINE_ONE, CUSTOMERS, CUSTOMERS_ONE)}


class Entitlement(BaseModel):
    feature: str
    entitled: bool
    limit: int | None = Field(description="null: unlimited, or a feature without a quantity.")
    expires_at: datetime | None = Field(description="null: until further notice.")
    source: str | None = Field(
        description="What grants the effective limit (subscription, payment or `stripe:` id)."
    )
    sources: list[str] = Field(description="Every source granting the feature.")


class UserEntitlements(BaseModel):
    user_id: str
    entitlements: list[Entitlement]


class CustomerEntitlements(BaseModel):
    customer_id: str
    entitlements: list[Entitlement]


_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, malformed, expired or unverifiable bearer token.", **_PROBLEM},
    503: {"description": "Read API not configured, or database/keys unavailable.", **_PROBLEM},
}
_SERVICE_ERRORS = {
    **_ERRORS,
    403: {"description": "The token lacks the service scope.", **_PROBLEM},
}


def _entitlement(grant: Grant) -> dict[str, Any]:
    return {
        "feature": grant.feature,
        "entitled": True,
        "limit": grant.limit,
        "expires_at": grant.expires_at,
        "source": grant.source,
        "sources": grant.sources,
    }


def _not_entitled(feature: str) -> dict[str, Any]:
    # 200, not 404: apps gate on `entitled` without treating "no" as an error.
    return {
        "feature": feature,
        "entitled": False,
        "limit": None,
        "expires_at": None,
        "source": None,
        "sources": [],
    }


def _json(body: dict[str, Any]) -> Response:
    return Response(to_json(body), media_type="application/json")


async def _read(request: Request, query: Callable[[BoundedPool], Awaitable[T]]) -> T:
    state = request.app.state
    pool: asyncpg.Pool | None = state.db_pool
    if pool is None:
        raise HTTPException(503, "database not configured")
    try:
        # Bounded: a stalled database gives a 503 by the deadline, not a hung request.
        return await query(BoundedPool(pool, state.settings.gateway_database_timeout_seconds))
    except DATABASE_UNAVAILABLE as exc:  # down, stalled or refusing: a 503, not a 500
        raise HTTPException(
            503, "database unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS}
        ) from exc
    except asyncpg.UndefinedTableError as exc:
        # The read views come with the entitlement worker's migrations: a gateway started
        # before `billing-fleet migrate` answers 503 until they exist, then recovers.
        log.error("read views missing: run `billing-fleet migrate`", extra={"error": repr(exc)})
        raise HTTPException(
            503,
            "database schema not migrated",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc


@router.get(
    MINE,
    summary="The caller's entitlements, across every Stripe customer mapped to the user",
    response_model=None,
    responses={200: {"model": UserEntitlements}, **_ERRORS},
)
async def my_entitlements(
    request: Request, principal: Annotated[Principal, Depends(authenticated)]
) -> Response:
    grants = await _read(request, lambda pool: access_store.user_grants(pool, principal.subject))
    return _json({"user_id": principal.subject, "entitlements": [_entitlement(g) for g in grants]})


@router.get(
    MINE_ONE,
    summary="Whether the caller holds one feature (entitled=false when not, never 404)",
    response_model=None,
    responses={200: {"model": Entitlement}, **_ERRORS},
)
async def my_entitlement(
    request: Request, feature: str, principal: Annotated[Principal, Depends(authenticated)]
) -> Response:
    grant = await _read(
        request, lambda pool: access_store.user_grant(pool, principal.subject, feature)
    )
    return _json(_entitlement(grant) if grant else _not_entitled(feature))


@router.get(
    CUSTOMERS,
    summary="A Stripe customer's entitlements (service tokens only)",
    response_model=None,
    responses={200: {"model": CustomerEntitlements}, **_SERVICE_ERRORS},
)
async def customer_entitlements(
    request: Request,
    customer_id: str,
    _: Annotated[Principal, Depends(service_caller)],
) -> Response:
    grants = await _read(request, lambda pool: access_store.customer_grants(pool, customer_id))
    return _json({"customer_id": customer_id, "entitlements": [_entitlement(g) for g in grants]})


@router.get(
    CUSTOMERS_ONE,
    summary="Whether a Stripe customer holds one feature (service tokens only)",
    response_model=None,
    responses={200: {"model": Entitlement}, **_SERVICE_ERRORS},
)
async def customer_entitlement(
    request: Request,
    customer_id: str,
    feature: str,
    _: Annotated[Principal, Depends(service_caller)],
) -> Response:
    grant = await _read(
        request, lambda pool: access_store.customer_grant(pool, customer_id, feature)
    )
    return _json(_entitlement(grant) if grant else _not_entitled(feature))


async def serve_fast(request: Request) -> Response | None:
    """Answer a read route directly; None when ``request`` is not one (FastAPI answers).
    Refusals are raised as ``HTTPException``, answered by the edge (``guard.py``)."""
    if request.method != "GET":
        return None
    # "/v1/entitlements[/F]" or "/v1/customers/C/entitlements[/F]", no empty segment
    scope = request.scope
    parts = scope["path"].split("/")
    if len(parts) < 3 or parts[1] != "v1" or "" in parts[2:]:
        return None
    match parts[2:]:
        case ["entitlements"]:
            scope[ROUTE] = _TEMPLATES[MINE]
            return await my_entitlements(request, await authenticate(request))
        case ["entitlements", feature]:
            scope[ROUTE] = _TEMPLATES[MINE_ONE]
            return await my_entitlement(request, feature, await authenticate(request))
        case ["customers", customer_id, "entitlements"]:
            scope[ROUTE] = _TEMPLATES[CUSTOMERS]
            caller = require_service_scope(request, await authenticate(request))
            return await customer_entitlements(request, customer_id, caller)
        case ["customers", customer_id, "entitlements", feature]:
            scope[ROUTE] = _TEMPLATES[CUSTOMERS_ONE]
            caller = require_service_scope(request, await authenticate(request))
            return await customer_entitlement(request, customer_id, feature, caller)
        case _:
            return None
