"""The entitlement read API: ``/v1/entitlements`` for users, ``/v1/customers/…`` for services.

Handlers return ready JSON bytes; the pydantic models below only document the shapes in
OpenAPI (validating our own output again would cost more than the query at 2,000 req/s).
``serve_fast`` runs the same handlers without FastAPI's routing and dependency layers,
which cost three times the handler itself (bench/e2e); the routes stay on the router
for OpenAPI and for requests the fast path does not match.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from api_gateway import access_store
from api_gateway.access_store import Grant
from api_gateway.auth import (
    Principal,
    authenticate,
    authenticated,
    require_service_scope,
    service_caller,
)
from api_gateway.guard import ROUTE
from api_gateway.reads import PROBLEM, READ_ERRORS, json_response, read

router = APIRouter(prefix="/v1", tags=["entitlements"])
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


_SERVICE_ERRORS = {
    **READ_ERRORS,
    403: {"description": "The token lacks the service scope.", **PROBLEM},
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


@router.get(
    MINE,
    summary="The caller's entitlements, across every Stripe customer mapped to the user",
    response_model=None,
    responses={200: {"model": UserEntitlements}, **READ_ERRORS},
)
async def my_entitlements(
    request: Request, principal: Annotated[Principal, Depends(authenticated)]
) -> Response:
    grants = await read(request, lambda pool: access_store.user_grants(pool, principal.subject))
    entitlements = [_entitlement(g) for g in grants]
    return json_response({"user_id": principal.subject, "entitlements": entitlements})


@router.get(
    MINE_ONE,
    summary="Whether the caller holds one feature (entitled=false when not, never 404)",
    response_model=None,
    responses={200: {"model": Entitlement}, **READ_ERRORS},
)
async def my_entitlement(
    request: Request, feature: str, principal: Annotated[Principal, Depends(authenticated)]
) -> Response:
    grant = await read(
        request, lambda pool: access_store.user_grant(pool, principal.subject, feature)
    )
    return json_response(_entitlement(grant) if grant else _not_entitled(feature))


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
    grants = await read(request, lambda pool: access_store.customer_grants(pool, customer_id))
    entitlements = [_entitlement(g) for g in grants]
    return json_response({"customer_id": customer_id, "entitlements": entitlements})


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
    grant = await read(
        request, lambda pool: access_store.customer_grant(pool, customer_id, feature)
    )
    return json_response(_entitlement(grant) if grant else _not_entitled(feature))


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
