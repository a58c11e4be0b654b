"""Realistic subscription events for the worker and end-to-end benchmarks.

Every event is a real Stripe fixture (``customer.subscription.created`` for a customer's
first event, ``customer.subscription.updated`` for the later ones) with a fresh event id,
its own customer and subscription, and a price of the bench catalog; the normalized form
comes from the gateway's own ``normalize``. Consecutive events of one customer move
between the catalog's plans, so each one changes entitlements (the worker's full path).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from api_gateway.normalize import normalize, partition_key
from api_gateway.webhooks import CE_SOURCE
from contracts import cloudevent_headers
from workers.entitlement.catalog import Catalog, parse_catalog

FIXTURES: Final = Path(__file__).resolve().parents[1] / "tests/fixtures/stripe"
CREATED_FIXTURE: Final = FIXTURES / "customer.subscription.created__syncengine__1.json"
UPDATED_FIXTURE: Final = FIXTURES / "customer.subscription.updated__syncengine__1.json"

# Three plans a customer moves between; every move changes several features.
CATALOG: Final[dict[str, Any]] = {
    "version": 1,
    "products": {
        "bench_basic": {
            "prices": ["price_bench_basic"],
            "features": {"projects": 3, "api_calls": 1000},
        },
        "bench_pro": {
            "prices": ["price_bench_pro"],
            "features": {
                "sso": True,
                "projects": 50,
                "api_calls": 100_000,
                "storage_gb": {"limit": 10, "per_seat": True},
            },
        },
        "bench_team": {
            "prices": ["price_bench_team"],
            "features": {
                "sso": True,
                "audit_log": True,
                "projects": 200,
                "api_calls": 1_000_000,
                "storage_gb": {"limit": 25, "per_seat": True},
            },
        },
    },
}
PRICES: Final = ("price_bench_basic", "price_bench_pro", "price_bench_team")
FEATURE: Final = "sso"
"""Granted by the plan of every e2e event (``price_bench_pro``)."""

BASE_TIME: Final = 1_700_000_000  # event.created of each customer's first event
STEP_SECONDS: Final = 60  # between a customer's consecutive events


def write_catalog(path: Path) -> Path:
    path.write_text(yaml.safe_dump(CATALOG, sort_keys=False))
    return path


def catalog() -> Catalog:
    return parse_catalog(CATALOG, origin="bench catalog")


def plan_features(price_id: str, quantity: int) -> dict[str, int | None]:
    """Feature -> limit (None: boolean) that ``price_id`` grants for ``quantity`` seats."""
    entry = catalog().resolve(price_id=price_id, lookup_key=None, product_id=None)
    assert entry is not None, price_id
    return {name: spec.amount(quantity) for name, spec in entry.features.items()}


_TEMPLATES: dict[bool, str] = {}


def stripe_event(
    *,
    event_id: str,
    customer_id: str,
    subscription_id: str,
    price_id: str,
    quantity: int,
    created: int,
    first: bool,
) -> dict[str, Any]:
    """A Stripe subscription event (created when ``first``, else updated) as POSTed."""
    if first not in _TEMPLATES:
        _TEMPLATES[first] = (CREATED_FIXTURE if first else UPDATED_FIXTURE).read_text()
    event: dict[str, Any] = json.loads(_TEMPLATES[first])  # a fresh copy, 10x deepcopy's speed
    event["id"] = event_id
    event["created"] = created
    sub = event["data"]["object"]
    sub["id"] = subscription_id
    sub["customer"] = customer_id
    sub["status"] = "active"
    item = sub["items"]["data"][0]  # one item (the created fixture repeats its price)
    item["id"] = f"si_{subscription_id[4:]}"
    item["subscription"] = subscription_id
    item["quantity"] = quantity
    for price in (item["price"], item["plan"], sub["plan"]):
        price["id"] = price_id
    sub["items"]["data"] = [item]
    sub["items"]["total_count"] = 1
    sub["items"]["url"] = f"/v1/subscription_items?subscription={subscription_id}"
    sub["quantity"] = quantity
    return event


@dataclass(frozen=True)
class Message:
    """One normalized event as the gateway publishes it."""

    value: bytes
    key: bytes
    headers: list[tuple[str, bytes]]


def to_message(stripe: dict[str, Any]) -> Message:
    event = normalize(stripe)
    headers = cloudevent_headers(event, source=CE_SOURCE)
    return Message(
        value=event.model_dump_json().encode(),
        key=partition_key(event).encode(),
        headers=[(k, v.encode()) for k, v in headers.items()],
    )


def run_token() -> str:
    """Makes this run's ids fresh (the broker and database may be external)."""
    return secrets.token_hex(4)


def subscription_events(count: int, customers: int) -> Iterator[dict[str, Any]]:
    """``count`` Stripe events over ``customers`` customers, round robin: customer ``c``'s
    ``k``-th event moves it to the next plan, a minute after its previous event."""
    run = run_token()
    for i in range(count):
        customer, step = i % customers, i // customers
        yield stripe_event(
            event_id=f"evt_bench{run}{i:09d}",
            customer_id=f"cus_bench{run}{customer:07d}",
            subscription_id=f"sub_bench{run}{customer:07d}",
            price_id=PRICES[(customer + step) % len(PRICES)],
            quantity=1 + customer % 3,
            created=BASE_TIME + step * STEP_SECONDS,
            first=step == 0,
        )
