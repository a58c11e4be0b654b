"""Property: every event the contracts accept is applied by the entitlement worker without
being dead-lettered, given a catalog that knows the prices the events name.

The events are drawn from the contracts' own JSON Schema (``tests/contract_events.py``),
so the generator follows the models' constraints as they change, and reach the worker as
JSON through ``parse_billing_event``, as a consumed record does; a candidate the contracts
refuse is discarded (the ingress answers 422 for it). Each is applied through the
runtime's own code (``apply_one`` per event, or ``apply_events`` for the whole draw in one
transaction, then ``write_outbox``) on a database of this module's own. "Applied without
being dead-lettered" means no exception (the runtime dead-letters whatever is not an
outage), every change event it emits is a valid ``EntitlementChange`` and no stored limit
is negative.

Outside the property, by design: a price the catalog does not know (a catalog fix and
``dlt replay`` apply it) and a subscription status the worker does not know yet (Stripe
added one: an upgrade and a replay apply it); the generator draws the worker's statuses.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import contracts
from contracts.events import QUANTITY_MAX
from tests.conftest import CreateDatabase
from tests.contract_events import DEFS, NOW, PRICES, billing_events, catalog
from tests.entitlement_support import item, subscription, subscription_event
from workers.entitlement.handler import EntitlementHandler
from workers.entitlement.worker import NAME as ENTITLEMENT
from workers.runtime.outbox import write_outbox
from workers.runtime.processing import apply_events, apply_one
from workers.runtime.spec import Outgoing, WorkerSpec

pytestmark = pytest.mark.integration

_TABLES = (
    "processed_events, outbox, entitlement_customers, entitlement_sources, entitlements, "
    "entitlement_schedule"
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_database(create_database: CreateDatabase) -> str:
    """A database for this module alone: each example starts from empty tables."""
    return await create_database(migrated=True)


def accepted(candidates: list[dict[str, Any]]) -> list[contracts.BillingEvent]:
    """The candidates the contracts accept, parsed from JSON as the worker parses them."""
    events = []
    for candidate in candidates:
        try:
            events.append(contracts.parse_billing_event(json.dumps(candidate)))
        except ValidationError:
            continue  # refused at the door: not part of the property
    return events


async def apply_all(
    url: str, events: list[contracts.BillingEvent], *, batched: bool
) -> list[Outgoing]:
    handler = EntitlementHandler(catalog(), past_due_grace=timedelta(days=3), clock=lambda: NOW)
    spec = WorkerSpec.single(ENTITLEMENT, handler.handle, handle_batch=handler.handle_batch)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {_TABLES}")
        emitted: list[Outgoing] = []
        if batched:
            async with conn.transaction():
                _, out = await apply_events(conn, spec, events)
                await write_outbox(conn, ENTITLEMENT, out)
            emitted += out
        else:
            for event in events:
                async with conn.transaction():
                    one = list(await apply_one(conn, spec, event) or [])
                    await write_outbox(conn, ENTITLEMENT, one)
                emitted += one
        # Time passes: the periodic job revokes what expired, for the customers above.
        later = EntitlementHandler(
            catalog(), past_due_grace=timedelta(days=3), clock=lambda: NOW + timedelta(days=400)
        )
        async with conn.transaction():
            expired = list(await later.expire(conn))
            await write_outbox(conn, ENTITLEMENT, expired)
        emitted += expired
        limits = await conn.fetch('SELECT "limit" FROM entitlements WHERE "limit" IS NOT NULL')
        assert all(row["limit"] >= 0 for row in limits), [row["limit"] for row in limits]
        return emitted
    finally:
        await conn.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No shrinking: each step applies events on PostgreSQL, and shrinking one failure took
    # minutes. The failing example is printed as drawn, with the worker's exception.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(candidates=st.lists(billing_events(), min_size=1, max_size=5), batched=st.booleans())
def test_every_event_the_contracts_accept_is_applied(
    own_database: str, candidates: list[dict[str, Any]], batched: bool
) -> None:
    events = accepted(candidates)
    assume(events)
    emitted = asyncio.run(apply_all(own_database, events, batched=batched))
    for outgoing in emitted:
        change = contracts.parse_entitlement_change(outgoing.value)
        assert change.limit is None or change.limit >= 0


def test_the_generator_reaches_the_catalog_and_the_bounds() -> None:
    """The property is only as good as what it draws: items and purchases naming the
    catalog's prices, and quantities at the contract's maximum, do come up."""
    maximum = DEFS["SubscriptionItem"]["properties"]["quantity"]["maximum"]
    seen = {"item": False, "purchase": False, "max_quantity": False}

    @settings(max_examples=150, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(billing_events())
    def draw(candidate: dict[str, Any]) -> None:
        for drawn in (candidate.get("subscription") or {}).get("items", []):
            seen["item"] |= drawn.get("price_id") in PRICES
            seen["max_quantity"] |= drawn.get("quantity") == maximum
        metadata = (candidate.get("payment") or candidate.get("checkout") or {}).get("metadata")
        seen["purchase"] |= isinstance(metadata, dict) and metadata.get("price_id") in PRICES

    draw()
    assert seen == {"item": True, "purchase": True, "max_quantity": True}


def test_events_at_the_ends_of_time_are_applied_and_beyond_them_refused(own_database: str) -> None:
    """The timestamp bounds, with the UTC offsets that push them furthest out: a past_due
    subscription at the last instant (its grace period is added to it), then an event at
    the first, for one customer (the second loads the rows the first stored)."""
    sub = subscription([item("price_base", quantity=QUANTITY_MAX)], status="past_due")
    late, early = (
        subscription_event(
            "subscription.updated",
            sub,
            customer_id="cus_edges",
            occurred_at=datetime.fromisoformat(text),
        ).model_dump_json()
        for text in ("8999-12-31T23:59:59-11:00", "1970-01-01T00:00:00+05:30")
    )
    events = accepted([json.loads(late), json.loads(early)])
    assert len(events) == 2
    asyncio.run(apply_all(own_database, events, batched=False))

    for beyond in (
        "9999-12-31T23:59:59-11:00",
        "0001-01-01T00:00:00+05:30",
        "1969-12-30T23:59:59Z",
    ):
        candidate = json.loads(early)
        candidate["occurred_at"] = beyond
        assert accepted([candidate]) == [], beyond
