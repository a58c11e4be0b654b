"""``billing-fleet worker invoice`` as a process on the embedded broker and real
PostgreSQL: normalized Stripe fixtures in, the ledger and receipts in its tables,
``invoices.v1`` records out through the outbox, the receipt's document delivery sent by
the worker's dispatcher, and a clean stop on SIGTERM.

The worker consumes a topic of the test's own (``tests.toy_worker:INVOICE_ON_TOPIC``, the
registry's declaration on another input topic) with a recording document channel;
``invoices.v1`` is shared by the session, so its records are filtered by key.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from api_gateway.normalize import normalize
from contracts import INVOICES, BillingEvent, parse_ledger_event
from tests.cli_support import stop_all, wait_worker_ready
from tests.fleet_settings import FleetSettings
from tests.integration.test_runtime_process import start_worker
from tests.runtime_toy import create_topics, publish_events, unique, wait_for
from tests.stripe_fixtures import load_event
from workers.invoice.emit import CE_SOURCE
from workers.runtime.dlt_admin import DeadLetter, read_records

pytestmark = pytest.mark.integration


def fixture_event(name: str, customer_id: str, suffix: str) -> BillingEvent:
    """The fixture (fresh Stripe event id) as the gateway normalizes it, for
    ``customer_id``, its Stripe object ids made unique with ``suffix``."""
    raw: dict[str, Any] = load_event(name)
    raw["data"]["object"]["customer"] = customer_id
    text = json.dumps(raw)
    for prefix in ('"in_', '"pi_', '"ch_'):
        text = text.replace(prefix, f"{prefix}{suffix}_")
    return normalize(json.loads(text))


async def records_for(bootstrap: str, customer: str) -> list[DeadLetter]:
    return [r for r in await read_records(bootstrap, INVOICES) if r.key == customer.encode()]


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def test_the_worker_process_keeps_the_ledger_and_emits_invoices_v1(
    settings: FleetSettings, create_database: Any, tmp_path: Path
) -> None:
    url = await create_database(migrated=True)  # its receipts and deliveries alone
    settings = settings.model_copy(update={"database_url": url})
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    topic = unique("invoice.in")
    await create_topics(settings, topic)
    customer, suffix = f"cus_inv_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex[:8]
    events = [
        fixture_event("invoice.created__rubymock__1", customer, suffix),
        fixture_event("payment_intent.succeeded__rubymock__1", customer, suffix),
        fixture_event("invoice.paid__rubymock__1", customer, suffix),
    ]
    log = tmp_path / "worker.log"
    worker, port = start_worker(
        settings,
        log,
        TOY_NAME=unique("invoice"),  # a consumer group of its own
        TOY_TOPIC=topic,
        BILLING_WORKER_DECLARATION="tests.toy_worker:INVOICE_ON_TOPIC",
        BILLING_INVOICE_RECEIPT_PREFIX="E2E",
        BILLING_DELIVERY_POLL_SECONDS="0.2",
    )
    try:
        await wait_worker_ready(worker, port, log)
        await publish_events(bootstrap, topic, events)
        found: list[DeadLetter] = []

        async def emitted() -> bool:
            found[:] = await records_for(bootstrap, customer)
            return len(found) >= 5

        await wait_for(emitted, timeout=30, message="invoices.v1 records")
        types = [parse_ledger_event(r.value).type for r in found]
        # The draft names no payment yet; the paid invoice names the intent: the link.
        assert types == [
            "invoice.created", "payment.succeeded", "receipt.issued", "invoice.paid",
            "payment.updated",
        ]  # fmt: skip
        assert all(r.header("ce_source") == CE_SOURCE for r in found)
        receipt = parse_ledger_event(found[2].value)
        assert receipt.type == "receipt.issued"
        number = receipt.receipt.number
        assert number.startswith("E2E-") and number.endswith("-000001")

        async def document_sent() -> bool:
            rows = await fetch(url, "SELECT idempotency_key, status FROM deliveries")
            return [tuple(r) for r in rows] == [(f"receipt-pdf:{number}", "sent")]

        await wait_for(document_sent, timeout=30, message="the receipt's document delivery")
        [stored] = await fetch(
            url, "SELECT number, payment_id, invoice_id, invoice_number FROM read_v1_receipts"
        )
        assert stored["number"] == number and stored["invoice_id"] is not None
        [invoice] = await fetch(url, "SELECT status, customer_id FROM ledger_invoices")
        assert tuple(invoice) == ("paid", customer)
        assert await fetch(url, "SELECT 1 FROM outbox") == []  # all relayed
    finally:
        stop_all([worker])
    assert worker.returncode == 0, log.read_text()[-3000:]
