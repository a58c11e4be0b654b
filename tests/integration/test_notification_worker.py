"""``billing-fleet worker notification`` as a process on the embedded broker and real
PostgreSQL: billing events (Stripe fixtures, normalized), invoices.v1 and entitlement
changes in on three topics; the directory kept, each notice one mail and each ledger or
entitlement event one webhook delivery, sent by the worker's dispatcher; a notice without
an address recorded as a skip, nothing dead-lettered; a clean stop on SIGTERM.

The worker consumes topics of the test's own (``tests.toy_worker:NOTIFICATION_ON_TOPIC``,
the registry's declaration on other input topics) with recording channels in its process:
what they were handed is read back from the delivery log (status ``sent``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts import cloudevent_headers, dead_letter_topic
from tests.cli_support import stop_all, wait_worker_ready
from tests.fleet_settings import FleetSettings
from tests.integration.test_runtime_process import start_worker
from tests.notification_support import (
    entitlement_change,
    fixture_event,
    mail_parts,
    receipt_issued,
)
from tests.runtime_toy import create_topics, publish, publish_events, unique, wait_for
from workers.notification.announce import SOURCES
from workers.runtime.dlt_admin import read_records

pytestmark = pytest.mark.integration
ALL = "http://127.0.0.1:9/all"  # the URL of the endpoint ``all`` (build_on_topics)


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def message(event: Any, source: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(value, key, headers) as the producer of ``event`` publishes it."""
    headers = cloudevent_headers(event, source=source)
    return (
        event.model_dump_json().encode(),
        (event.customer_id or "").encode(),
        [(name, value.encode()) for name, value in headers.items()],
    )


async def test_the_worker_process_mails_announces_and_skips(
    settings: FleetSettings, create_database: Any, tmp_path: Path
) -> None:
    url = await create_database(migrated=True)  # its directory and deliveries alone
    settings = settings.model_copy(update={"database_url": url})
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    billing, invoices, changes = (unique(f"notify.{t}") for t in ("in", "invoices", "changes"))
    await create_topics(settings, billing, invoices, changes)
    known, unknown = (f"cus_w{uuid.uuid4().hex[:10]}" for _ in range(2))
    customer = fixture_event(
        "customer.created__rubymock__1", known, email="jane@example.test", name="Jane"
    )
    trial = fixture_event("customer.subscription.trial_will_end__nijikokun__1", known)
    ended = fixture_event("customer.subscription.deleted__rubymock__1", unknown)
    receipt = receipt_issued("R-2026-000042", customer_id=known, email=None)
    granted = entitlement_change("entitlement.granted", known, "sso")
    log = tmp_path / "worker.log"
    name = unique("notification")  # a consumer group of its own
    worker, port = start_worker(
        settings,
        log,
        TOY_NAME=name,
        TOY_TOPIC=billing,
        TOY_INVOICES_TOPIC=invoices,
        TOY_CHANGES_TOPIC=changes,
        BILLING_WORKER_DECLARATION="tests.toy_worker:NOTIFICATION_ON_TOPIC",
        BILLING_DELIVERY_POLL_SECONDS="0.2",
    )
    try:
        await wait_worker_ready(worker, port, log)
        await publish_events(bootstrap, billing, [customer, trial, ended])

        async def directory_knows() -> bool:
            rows = await fetch(
                url, "SELECT 1 FROM notification_contacts WHERE customer_id = $1", known
            )
            return bool(rows)

        # The other topics have consumers of their own: a receipt applied before the
        # customer's address is in the directory is skipped (by design), so the test
        # publishes them once the address is known.
        await wait_for(directory_knows, timeout=60, message="the customer in the directory")
        await publish(bootstrap, invoices, [message(receipt, SOURCES["invoices.v1"])])
        await publish(bootstrap, changes, [message(granted, SOURCES["entitlements.changes.v1"])])

        async def all_sent() -> bool:
            rows = await fetch(url, "SELECT status FROM deliveries")
            return len(rows) == 4 and all(row["status"] == "sent" for row in rows)

        await wait_for(all_sent, timeout=60, message="two mails and two webhooks sent")
        rows = await fetch(
            url,
            "SELECT channel, destination, idempotency_key, payload FROM deliveries ORDER BY id",
        )
        mails = {r["idempotency_key"]: r for r in rows if r["channel"] == "email"}
        assert set(mails) == {
            f"trial_ending:{trial.source.stripe_event_id}:{known}",
            f"receipt:{receipt.id}:{known}",
        }
        assert {r["destination"] for r in mails.values()} == {"jane@example.test"}
        subjects = {mail_parts(r["payload"])[0]["Subject"] for r in mails.values()}
        assert subjects == {
            "Your billing-fleet trial ends on October 5, 2015",
            "Your billing-fleet receipt R-2026-000042",
        }
        webhooks = sorted(
            (r["destination"], r["idempotency_key"]) for r in rows if r["channel"] == "webhook"
        )
        assert webhooks == sorted(
            [(ALL, f"webhook:all:{receipt.id}"), (ALL, f"webhook:all:{granted.id}")]
        )
        skipped = await fetch(url, "SELECT notice, recipient, reason FROM notification_skips")
        assert [tuple(r) for r in skipped] == [("subscription_ended", unknown, "no_email")]
        [contact] = await fetch(
            url, f"SELECT email, name FROM notification_contacts WHERE customer_id = '{known}'"
        )
        assert tuple(contact) == ("jane@example.test", "Jane")
        for topic in (billing, invoices, changes):
            assert await read_records(bootstrap, dead_letter_topic(topic, name)) == []
    finally:
        stop_all([worker])
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert "jane@example.test" not in log.read_text()  # no address in the worker's log
