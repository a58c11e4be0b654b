"""The notification worker on real PostgreSQL, through the runtime's per-event path: each
notice from fixture events becomes one mail to the customer, exactly once; what cannot be
sent is recorded and counted, never poison; the directory's newest-wins and erasure; the
locale; outbound webhook deliveries; retention.

Each test runs in a transaction rolled back afterwards (``ledger_conn``, the invoice
tests' fixture: a migrated database of its own), so every test meets an empty directory
and delivery log.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest
from pydantic_core import from_json, to_json

from billing_fleet.masking import mask_email
from contracts import parse_ledger_event
from tests.notification_support import (
    NOW,
    apply,
    at,
    contact_row,
    customer_event,
    deliveries,
    delivery_keys,
    endpoints_of,
    entitlement_change,
    event_id_of,
    fixture_event,
    ledger_invoice_event,
    mail_parts,
    notifier,
    receipt_issued,
    replay,
    skips,
)
from tests.runtime_toy import metric
from workers.notification.notices import NOTICES
from workers.runtime.deliveries.mail import message_id_for
from workers.runtime.deliveries.model import Delivery
from workers.runtime.deliveries.store import write_deliveries

pytestmark = pytest.mark.integration

SKIPPED = "billing_notifications_skipped_total"


def customer_id() -> str:
    return f"cus_n{uuid.uuid4().hex[:12]}"


async def test_each_notice_from_fixture_events_is_one_mail_to_the_customer(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier(notification_enabled=list(NOTICES))
    created = fixture_event(
        "customer.created__rubymock__1", cus, email="jane@example.test", name="Jane Doe"
    )
    events = [
        fixture_event("customer.subscription.trial_will_end__nijikokun__1", cus),
        fixture_event("customer.subscription.updated__drfstripe__1", cus),
        fixture_event("customer.subscription.deleted__rubymock__1", cus),
        receipt_issued("R-2026-000007", customer_id=cus, email="old@example.test"),
        ledger_invoice_event(
            "invoice.payment_failed",
            "in_1",
            customer_id=cus,
            email=None,
            next_attempt=at("2026-03-04T12:00:00"),
        ),
        entitlement_change("entitlement.granted", cus, "sso"),
        entitlement_change("entitlement.revoked", cus, "sso"),
    ]
    assert await apply(conn, notify.spec, created)
    for event in events:
        assert await apply(conn, notify.spec, event)

    rows = await deliveries(conn)
    ids = [event_id_of(notify.spec, event) for event in events]
    kinds = ["trial_ending", "cancellation_scheduled", "subscription_ended", "receipt",
             "payment_failed", "access_granted", "access_revoked"]  # fmt: skip
    assert [r["idempotency_key"] for r in rows] == [
        f"{kind}:{event_id}:{cus}" for kind, event_id in zip(kinds, ids, strict=True)
    ]
    # The customer event's address, not the receipt's own (older) one.
    assert {r["destination"] for r in rows} == {"jane@example.test"}
    subjects = []
    for row in rows:
        message, text, html = mail_parts(row["payload"])
        assert message["To"].addresses[0].addr_spec == "jane@example.test"
        assert message["Message-ID"] == message_id_for(row["idempotency_key"], "example.com")
        assert "Hello Jane Doe," in text and "Jane Doe" in html
        subjects.append(message["Subject"])
        assert from_json(row["metadata"])["notice"] in kinds
    assert subjects[0] == "Your billing-fleet trial ends on October 5, 2015"
    assert subjects[3] == "Your billing-fleet receipt R-2026-000007"
    receipt_text = mail_parts(rows[3]["payload"])[1]
    assert "€20.00" in receipt_text and "Visa ending in 4242" in receipt_text
    dunning_text = mail_parts(rows[4]["payload"])[1]
    assert "We will try again on March 4, 2026." in dunning_text
    assert "https://invoice.stripe.test/in_1" in dunning_text
    assert await skips(conn) == []


async def test_no_address_is_a_recorded_counted_skip_not_poison(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier()
    trial = fixture_event("customer.subscription.trial_will_end__rubymock__1", cus)
    guest = receipt_issued("R-guest", customer_id=None, email=None)
    before = metric(SKIPPED, notice="trial_ending", reason="no_email")
    before_receipts = metric(SKIPPED, notice="receipt", reason="no_email")

    assert await apply(conn, notify.spec, trial)  # applied: no exception, no dead letter
    assert await apply(conn, notify.spec, guest)
    await replay(conn, notify.spec, trial)  # judged again: recorded and counted once

    assert await deliveries(conn) == []
    assert await skips(conn) == [
        ("trial_ending", trial.source.stripe_event_id, cus, "no_email"),
        ("receipt", str(guest.id), "", "no_email"),
    ]
    assert metric(SKIPPED, notice="trial_ending", reason="no_email") == before + 1
    assert metric(SKIPPED, notice="receipt", reason="no_email") == before_receipts + 1


async def test_a_redelivered_or_replayed_event_sends_nothing_new(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier()
    receipt = receipt_issued("R-1", customer_id=cus, email="a@example.test")

    assert await apply(conn, notify.spec, receipt)
    assert not await apply(conn, notify.spec, receipt)  # the runtime's duplicate
    await replay(conn, notify.spec, receipt)  # processed_events cleared: the key decides
    # The address changed since: a replay still sends nothing new (the key names the
    # customer, not the address).
    await apply(conn, notify.spec, customer_event(cus, email="new@example.test", occurred_at=NOW))
    await replay(conn, notify.spec, receipt)

    assert await delivery_keys(conn) == [f"receipt:{receipt.id}:{cus}"]
    assert [r["destination"] for r in await deliveries(conn)] == ["a@example.test"]


async def test_the_newest_customer_event_wins_and_checkouts_never_override_it(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier()
    newer = customer_event(cus, email="new@example.test", name="New", occurred_at=NOW)
    older = customer_event(
        cus, email="old@example.test", occurred_at=NOW - timedelta(hours=1),
        event_type="customer.created",
    )  # fmt: skip
    checkout = fixture_event("checkout.session.completed__rubymock__1", cus)

    for event in (newer, older, checkout):
        await apply(conn, notify.spec, event)

    row = await contact_row(conn, cus)
    assert row is not None
    assert (row["email"], row["name"], row["fallback_email"]) == (
        "new@example.test",
        "New",
        "stripe@example.com",
    )
    await apply(conn, notify.spec, receipt_issued("R-2", customer_id=cus, email=None))
    assert [r["destination"] for r in await deliveries(conn)] == ["new@example.test"]


async def test_a_checkout_s_address_serves_until_a_customer_event_gives_one(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier()
    await apply(conn, notify.spec, fixture_event("checkout.session.completed__rubymock__1", cus))
    await apply(conn, notify.spec, fixture_event("customer.subscription.deleted__rubymock__1", cus))

    assert [r["destination"] for r in await deliveries(conn)] == ["stripe@example.com"]


async def test_customer_deleted_erases_the_contact_for_good(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier()
    await apply(
        conn, notify.spec, customer_event(cus, email="d@example.test", name="D", occurred_at=NOW)
    )
    await apply(conn, notify.spec, fixture_event("checkout.session.completed__rubymock__1", cus))
    deleted = fixture_event("customer.deleted__rubymock__1", cus)

    await apply(conn, notify.spec, deleted)
    # Later news about the customer stores no contact data again.
    later = deleted.occurred_at + timedelta(days=1)
    await apply(
        conn, notify.spec, customer_event(cus, email="back@example.test", occurred_at=later)
    )
    receipt = receipt_issued("R-3", customer_id=cus, email="r@example.test")
    await apply(conn, notify.spec, receipt)

    row = await contact_row(conn, cus)
    assert row is not None and row["erased_at"] is not None
    assert (row["email"], row["name"], row["fallback_email"]) == (None, None, None)
    assert await deliveries(conn) == []
    assert await skips(conn) == [("receipt", str(receipt.id), cus, "customer_deleted")]


async def test_the_customer_s_preferred_locale_chooses_the_templates(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    notify = notifier()
    customer = customer_event(
        cus, email="k@example.test", name="Käthe", occurred_at=NOW,
        metadata={"preferred_locales": "de-CH,en"},
    )  # fmt: skip
    await apply(conn, notify.spec, customer)
    receipt = receipt_issued("R-4", customer_id=cus, email=None, amount=1234, currency="kwd")
    await apply(conn, notify.spec, receipt)
    await apply(conn, notify.spec, fixture_event("customer.subscription.deleted__rubymock__1", cus))

    [mail, ended] = await deliveries(conn)
    message, text, _ = mail_parts(mail["payload"])
    assert message["Subject"] == "Ihre Quittung R-4 von billing-fleet"
    assert "Guten Tag Käthe," in text and "KWD\xa01.234" in text
    assert from_json(mail["metadata"])["locale"] == "de"
    # No German templates for this one: English.
    assert mail_parts(ended["payload"])[0]["Subject"] == "Your billing-fleet subscription has ended"


async def test_ledger_and_entitlement_events_are_announced_to_the_endpoints_that_want_them(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn, cus = ledger_conn, customer_id()
    endpoints = endpoints_of({"crm": ["receipt.*", "invoice.*"], "audit": []})
    notify = notifier(endpoints=endpoints)
    receipt = receipt_issued("R-5", customer_id=cus, email="w@example.test")
    change = entitlement_change("entitlement.updated", cus, "api_calls", limit=10)
    created = fixture_event("customer.created__rubymock__1", cus)

    for event in (receipt, change, created):
        await apply(conn, notify.spec, event)
    await replay(conn, notify.spec, receipt)

    rows = await deliveries(conn, "webhook")
    assert [(r["destination"], r["idempotency_key"]) for r in rows] == [
        ("http://127.0.0.1:9/crm", f"webhook:crm:{receipt.id}"),
        ("http://127.0.0.1:9/audit", f"webhook:audit:{receipt.id}"),
        ("http://127.0.0.1:9/audit", f"webhook:audit:{change.id}"),
    ]  # billing events are not announced; the replay added nothing
    cloudevent = from_json(rows[0]["payload"])
    assert {k: cloudevent[k] for k in ("specversion", "id", "type", "source", "subject")} == {
        "specversion": "1.0",
        "id": str(receipt.id),
        "type": "receipt.issued",
        "source": "/billing-fleet/invoice",
        "subject": cus,
    }
    assert cloudevent["time"] == NOW.isoformat().replace("+00:00", "Z")
    assert parse_ledger_event(to_json(cloudevent["data"])) == receipt
    assert from_json(rows[2]["payload"])["source"] == "/billing-fleet/entitlement"
    assert from_json(rows[0]["headers"]) == {"content-type": "application/cloudevents+json"}


async def test_retention_masks_this_worker_s_old_sent_mails_only(
    ledger_conn: asyncpg.Connection,
) -> None:
    conn = ledger_conn
    notify = notifier()
    old, recent, pending = customer_id(), customer_id(), customer_id()
    for cus in (old, recent, pending):
        receipt = receipt_issued(f"R-{cus}", customer_id=cus, email=f"{cus}@example.test")
        await apply(conn, notify.spec, receipt)
    other = Delivery("email", "someone@example.test", "other-worker:1", b"kept")
    await write_deliveries(conn, "other", [other])
    for cus, days in ((old, 31), (recent, 29)):
        await conn.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = now() - make_interval(days => $1),"
            " last_detail = '250 ok for ' || destination"
            " WHERE worker = 'notification' AND destination = $2",
            days,
            f"{cus}@example.test",
        )
    await conn.execute(
        "UPDATE deliveries SET status = 'sent', sent_at = now() - interval '90 days'"
        " WHERE worker = 'other'"
    )
    assert notify.spec.periodic is not None

    assert await notify.spec.periodic(conn) == []
    assert await notify.spec.periodic(conn) == []  # nothing left to mask

    rows = await conn.fetch("SELECT * FROM deliveries WHERE worker IN ('notification', 'other')")

    def of(cus: str) -> asyncpg.Record:
        [row] = [r for r in rows if r["idempotency_key"].endswith(f":{cus}")]
        return row

    masked = of(old)
    assert masked["destination"] == mask_email(f"{old}@example.test") == "c***@e***.test"
    assert masked["payload"] == b"" and masked["last_detail"] is None
    assert masked["status"] == "sent"
    for cus in (recent, pending):
        kept = of(cus)
        assert kept["destination"] == f"{cus}@example.test" and kept["payload"]
    [untouched] = [r for r in rows if r["worker"] == "other"]
    assert (untouched["destination"], untouched["payload"]) == ("someone@example.test", b"kept")
