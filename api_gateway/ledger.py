"""The ledger read API: invoices, payments, subscriptions and receipts, for a user
(``/v1/…``: the token's subject, through every Stripe customer mapped to it) and for
services (``/v1/customers/{customer_id}/…``, with the ledger scope).

As the entitlement routes (``access.py``): handlers answer ready JSON bytes, the models
(``ledger_models.py``) only document them, and ``serve_fast`` runs the same handlers
without FastAPI's routing and dependency layers (its refusals are raised as
``HTTPException`` and answered by the edge, ``guard.py``). A record of someone else's is
404, as an unknown one: the answer never tells that it exists.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, Protocol

from fastapi import APIRouter, Depends, Request, Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.exceptions import HTTPException

from api_gateway import ledger_models, ledger_store
from api_gateway.auth import (
    RETRY_AFTER_SECONDS,
    Principal,
    authenticate,
    authenticated,
    ledger_caller,
    require_ledger_scope,
)
from api_gateway.guard import ROUTE
from api_gateway.ledger_store import INVOICES, LISTINGS, PAYMENTS, SUBSCRIPTIONS, Listing, Owner
from api_gateway.pagination import Position, encode_cursor, list_query, openapi_parameters
from api_gateway.reads import PROBLEM, READ_ERRORS, encoded_json_response, json_response, read

router = APIRouter(prefix="/v1", tags=["ledger"])

# The routes' paths under the router's prefix, a user's; a service's are under CUSTOMER.
INVOICE = "/invoices/{invoice_id}"
RECEIPT = "/receipts/{number}"
RECEIPT_PDF = "/receipts/{number}.pdf"
CUSTOMER = "/customers/{customer_id}"
PDF_MEDIA_TYPE = "application/pdf"
# A receipt's PDF is rendered by a job of the invoice worker shortly after the receipt.
PDF_RETRY_AFTER_SECONDS = RETRY_AFTER_SECONDS
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")

_LIST_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    400: {"description": "A query parameter is malformed or unknown.", **PROBLEM},
}
_ONE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    404: {"description": "No such record among the caller's (or the customer's).", **PROBLEM},
}
_SERVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The token lacks the ledger scope.", **PROBLEM}
}
_LIST_PARAMETERS: Final = {"parameters": openapi_parameters()}
LIST_DESCRIPTION = (
    "Newest first (by `created_at`, then id), `limit` rows a page; pass `next_cursor` as "
    "`cursor` for the next one. Rows written meanwhile never make a page skip or repeat one "
    "that existed when the walk began."
)
_PDF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The rendered receipt.",
        "content": {PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    503: {
        "description": "Not rendered yet (`Retry-After`), or the database is unavailable.",
        **PROBLEM,
    },
}


# -- handlers: the fast path and the FastAPI routes both run these --------------------------


async def serve_page(request: Request, listing: Listing, owner: Owner) -> Response:
    query = list_query(request.query_params)
    rows = await read(request, lambda pool: ledger_store.page(pool, listing, owner, query))
    data, next_cursor = rows[: query.limit], None
    if len(rows) > query.limit:  # the page is full and more follow: go on after its last
        next_cursor = encode_cursor(Position(data[-1].created_at, data[-1].id))
    # The rows' JSON joined as they come (an invoice's is stored ready).
    rows_json = b",".join(row.json for row in data)
    body = b'{"data":[%b],"next_cursor":%b}' % (rows_json, to_json(next_cursor))
    return encoded_json_response(body)


async def serve_invoice(request: Request, owner: Owner, invoice_id: str) -> Response:
    body = await read(request, lambda pool: ledger_store.invoice(pool, owner, invoice_id))
    if body is None:
        raise HTTPException(404, "invoice not found")
    return encoded_json_response(body)


async def serve_receipt(request: Request, owner: Owner, number: str) -> Response:
    row = await read(request, lambda pool: ledger_store.receipt(pool, owner, number))
    if row is None:
        raise HTTPException(404, "receipt not found")
    return json_response(row)


async def serve_receipt_pdf(request: Request, owner: Owner, number: str) -> Response:
    found = await read(request, lambda pool: ledger_store.receipt_pdf(pool, owner, number))
    if found is None:
        raise HTTPException(404, "receipt not found")
    if found.pdf is None:
        raise HTTPException(
            503,
            "receipt PDF not rendered yet; retry after Retry-After seconds",
            headers={"Retry-After": PDF_RETRY_AFTER_SECONDS},
        )
    headers = {}
    if _SAFE_FILE_NAME.fullmatch(number):  # receipt numbers are; anything else gets none
        headers["Content-Disposition"] = f'inline; filename="{number}.pdf"'
    return Response(found.pdf, media_type=PDF_MEDIA_TYPE, headers=headers)


def _mine(principal: Principal) -> Owner:
    return Owner("user", principal.subject)


def _of_customer(customer_id: str) -> Owner:
    return Owner("customer", customer_id)


# -- routes: OpenAPI, and what the fast path leaves to FastAPI ------------------------------


class RouteDecorator(Protocol):
    """What ``router.get(...)`` returns: registers the endpoint, returns it unchanged."""

    def __call__(self, endpoint: DecoratedCallable, /) -> DecoratedCallable: ...


Caller = Annotated[Principal, Depends(authenticated)]
Service = Annotated[Principal, Depends(ledger_caller)]


def _list_route(listing: Listing, page: type[BaseModel], *, service: bool) -> RouteDecorator:
    """The ``router.get`` decorator of ``listing``'s route: a user's, or a service's."""
    what = listing.name
    return router.get(
        f"{CUSTOMER}/{what}" if service else f"/{what}",
        summary=f"A Stripe customer's {what} (ledger scope)" if service else f"The caller's {what}",
        description=LIST_DESCRIPTION,
        response_model=None,
        responses={
            200: {"model": page},
            **_LIST_ERRORS,
            **(_SERVICE_ERRORS if service else {}),
        },
        openapi_extra=_LIST_PARAMETERS,
    )


def _one_route(path: str, summary: str, model: type[BaseModel], *, service: bool) -> RouteDecorator:
    return router.get(
        f"{CUSTOMER}{path}" if service else path,
        summary=f"{summary} of a Stripe customer (ledger scope)" if service else summary,
        response_model=None,
        responses={200: {"model": model}, **_ONE_ERRORS, **(_SERVICE_ERRORS if service else {})},
    )


def _pdf_route(*, service: bool) -> RouteDecorator:
    summary = "A receipt's PDF, as stored (503 with Retry-After until it is rendered)"
    return router.get(
        f"{CUSTOMER}{RECEIPT_PDF}" if service else RECEIPT_PDF,
        summary=f"{summary}, of a Stripe customer (ledger scope)" if service else summary,
        response_class=Response,
        responses={
            **_ONE_ERRORS,
            **(_SERVICE_ERRORS if service else {}),
            **_PDF_RESPONSES,
        },
    )


@_list_route(INVOICES, ledger_models.InvoicePage, service=False)
async def my_invoices(request: Request, caller: Caller) -> Response:
    return await serve_page(request, INVOICES, _mine(caller))


@_list_route(INVOICES, ledger_models.InvoicePage, service=True)
async def customer_invoices(request: Request, customer_id: str, _: Service) -> Response:
    return await serve_page(request, INVOICES, _of_customer(customer_id))


@_one_route(INVOICE, "One invoice, with its lines", ledger_models.InvoiceWithLines, service=False)
async def my_invoice(request: Request, invoice_id: str, caller: Caller) -> Response:
    return await serve_invoice(request, _mine(caller), invoice_id)


@_one_route(INVOICE, "One invoice, with its lines", ledger_models.InvoiceWithLines, service=True)
async def customer_invoice(
    request: Request, customer_id: str, invoice_id: str, _: Service
) -> Response:
    return await serve_invoice(request, _of_customer(customer_id), invoice_id)


@_list_route(PAYMENTS, ledger_models.PaymentPage, service=False)
async def my_payments(request: Request, caller: Caller) -> Response:
    return await serve_page(request, PAYMENTS, _mine(caller))


@_list_route(PAYMENTS, ledger_models.PaymentPage, service=True)
async def customer_payments(request: Request, customer_id: str, _: Service) -> Response:
    return await serve_page(request, PAYMENTS, _of_customer(customer_id))


@_list_route(SUBSCRIPTIONS, ledger_models.SubscriptionPage, service=False)
async def my_subscriptions(request: Request, caller: Caller) -> Response:
    return await serve_page(request, SUBSCRIPTIONS, _mine(caller))


@_list_route(SUBSCRIPTIONS, ledger_models.SubscriptionPage, service=True)
async def customer_subscriptions(request: Request, customer_id: str, _: Service) -> Response:
    return await serve_page(request, SUBSCRIPTIONS, _of_customer(customer_id))


# Before RECEIPT, which would take "R-1.pdf" as a number: Starlette matches in order.
@_pdf_route(service=False)
async def my_receipt_pdf(request: Request, number: str, caller: Caller) -> Response:
    return await serve_receipt_pdf(request, _mine(caller), number)


@_pdf_route(service=True)
async def customer_receipt_pdf(
    request: Request, customer_id: str, number: str, _: Service
) -> Response:
    return await serve_receipt_pdf(request, _of_customer(customer_id), number)


@_one_route(RECEIPT, "One receipt", ledger_models.Receipt, service=False)
async def my_receipt(request: Request, number: str, caller: Caller) -> Response:
    return await serve_receipt(request, _mine(caller), number)


@_one_route(RECEIPT, "One receipt", ledger_models.Receipt, service=True)
async def customer_receipt(request: Request, customer_id: str, number: str, _: Service) -> Response:
    return await serve_receipt(request, _of_customer(customer_id), number)


# -- the fast path -------------------------------------------------------------------------

Served = Callable[[Request, Owner], Awaitable[Response]]


def _route(rest: list[str]) -> tuple[str, Served] | None:
    """The template (under the owner's prefix) and handler of a ledger path's segments."""
    match rest:
        case [name] if name in LISTINGS:
            listing = LISTINGS[name]
            return f"/{name}", lambda request, owner: serve_page(request, listing, owner)
        case ["invoices", invoice_id]:
            return INVOICE, lambda request, owner: serve_invoice(request, owner, invoice_id)
        # As Starlette's RECEIPT_PDF pattern: a number of one character or more, then .pdf
        case ["receipts", file] if len(file) > 4 and file.endswith(".pdf"):
            number = file[:-4]
            return RECEIPT_PDF, lambda request, owner: serve_receipt_pdf(request, owner, number)
        case ["receipts", number]:
            return RECEIPT, lambda request, owner: serve_receipt(request, owner, number)
        case _:
            return None


async def serve_fast(request: Request) -> Response | None:
    """Answer a ledger route directly; None when ``request`` is not one (FastAPI answers).
    Refusals are raised as ``HTTPException``, answered by the edge (``guard.py``)."""
    if request.method != "GET":
        return None
    scope = request.scope
    parts = scope["path"].split("/")
    if len(parts) < 3 or parts[1] != "v1" or "" in parts[2:]:
        return None
    rest = parts[2:]
    customer_id = None
    if rest[0] == "customers" and len(rest) > 2:
        customer_id, rest = rest[1], rest[2:]
    route = _route(rest)
    if route is None:
        return None
    template, served = route
    principal = await authenticate(request)
    if customer_id is None:
        scope[ROUTE] = router.prefix + template
        return await served(request, _mine(principal))
    scope[ROUTE] = router.prefix + CUSTOMER + template
    require_ledger_scope(request, principal)
    return await served(request, _of_customer(customer_id))
