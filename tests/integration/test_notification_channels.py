"""``billing-fleet worker notification`` as a process with its REAL channels: mails through
a real SMTP relay (aiosmtpd, ``tests/smtp_server.py``) and signed webhooks to real
loopback HTTP receivers (``tests/http_receiver.py``), on the embedded broker and real
PostgreSQL. Every assertion is on what the servers received.

The worker consumes topics of the test's own (``tests.toy_worker:NOTIFICATION_REAL_ON_TOPIC``:
the registry's worker, its default channels from the ``BILLING_NOTIFICATION_*`` settings,
under a name of its own). Proven here: the mails as a client shows them (headers, both
parts, amounts per currency, links, the customer's locale) and the webhooks verified with
``standardwebhooks`` and by hand through a secret rotation; an SMTP outage of 10 s and a
webhook endpoint answering 503 delay only their own deliveries (nothing lost, dead or
dead-lettered); a SIGKILL while mails are in flight re-sends, after the lease, only mails
the relay took but the worker had not recorded, with the same ``Message-ID``; a 5xx for
one recipient fails that mail once; a 410 disables the endpoint for this worker's rows.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from contracts import INVOICES, ReceiptIssuedEvent, dead_letter_topic
from tests.cli_support import stop_all, tail, wait_worker_ready
from tests.fleet_settings import FleetSettings
from tests.http_receiver import Answer, Receiver
from tests.integration.test_notification_worker import fetch, message
from tests.integration.test_runtime_process import start_worker
from tests.notification_support import (
    customer_event,
    fixture_event,
    mail_parts,
    receipt_issued,
)
from tests.runtime_toy import create_topics, publish, publish_events, unique, wait_for
from tests.smtp_server import MailServer, Received
from tests.webhook_support import endpoint, new_secret, verifies, write_endpoints
from workers.notification.announce import SOURCES
from workers.notification.keys import notice_key, webhook_key
from workers.notification.webhooks.payload import cloudevent_payload
from workers.runtime.deliveries.mail import message_id_for
from workers.runtime.dlt_admin import read_records

pytestmark = pytest.mark.integration

SENDER_DOMAIN = "acme.example.test"
SENDER = f"billing@{SENDER_DOMAIN}"
COMPANY = "Acme Billing"
UNSUBSCRIBE = "https://app.acme.example.test/unsubscribe"
RECEIPT_URL = "https://api.acme.example.test/v1/receipts/{number}.pdf"
SHORT_BACKOFF = "[0.5, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]"  # about 21 s of retries
CHANNEL_TIMEOUTS = {
    # A send outlives neither its lease: the SMTP timeout, the signed webhook's
    # (HTTP timeout plus two database round trips), both checked at start-up.
    "BILLING_NOTIFICATION_SMTP_TIMEOUT_SECONDS": "2",
    "BILLING_DELIVERY_HTTP_TIMEOUT_SECONDS": "1",
    "BILLING_WORKER_DATABASE_TIMEOUT_SECONDS": "1.5",
    "BILLING_DELIVERY_LEASE_SECONDS": "4.5",
}


@pytest.fixture
def relay() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@dataclass
class NotifierRun:
    """One test's worker: its database, topics, name, settings and log."""

    url: str
    bootstrap: str
    name: str
    billing: str
    invoices: str
    changes: str
    env: dict[str, str]
    log: Path
    settings: FleetSettings

    def start(self) -> tuple[subprocess.Popen[bytes], int]:
        return start_worker(
            self.settings,
            self.log,
            TOY_NAME=self.name,
            TOY_TOPIC=self.billing,
            TOY_INVOICES_TOPIC=self.invoices,
            TOY_CHANGES_TOPIC=self.changes,
            BILLING_WORKER_DECLARATION="tests.toy_worker:NOTIFICATION_REAL_ON_TOPIC",
            BILLING_DELIVERY_POLL_SECONDS="0.2",
            **self.env,
        )

    async def started(self) -> subprocess.Popen[bytes]:
        worker, port = self.start()
        try:
            await wait_worker_ready(worker, port, self.log)
        except BaseException:
            stop_all([worker])
            raise
        return worker

    async def publish_receipts(self, receipts: Sequence[ReceiptIssuedEvent]) -> None:
        await publish(
            self.bootstrap, self.invoices, [message(r, SOURCES[INVOICES]) for r in receipts]
        )

    async def rows(self, channel: str) -> list[dict[str, Any]]:
        found = await fetch(
            self.url,
            "SELECT d.id, d.destination, d.idempotency_key, d.status, d.attempts, d.last_code,"
            " d.metadata::text AS metadata,"
            " (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.id) AS tried"
            " FROM deliveries d WHERE d.worker = $1 AND d.channel = $2 ORDER BY d.id",
            self.name,
            channel,
        )
        return [dict(row) for row in found]

    async def statuses(self, channel: str) -> Counter[str]:
        return Counter(row["status"] for row in await self.rows(channel))

    async def dead_letters(self) -> list[Any]:
        found: list[Any] = []
        for topic in (self.billing, self.invoices, self.changes):
            found += await read_records(self.bootstrap, dead_letter_topic(topic, self.name))
        return found


async def prepare(
    settings: FleetSettings,
    create_database: Any,
    tmp_path: Path,
    relay: MailServer,
    **env: str,
) -> NotifierRun:
    """A database and topics of the test's own and the worker's settings: the relay, the
    sender, the links, the timeouts above; ``env`` adds or overrides."""
    url = await create_database(migrated=True)
    settings = settings.model_copy(update={"database_url": url})
    assert settings.kafka_bootstrap_servers
    billing, invoices, changes = (unique(f"notify.real.{t}") for t in ("in", "inv", "chg"))
    await create_topics(settings, billing, invoices, changes)
    values = {
        "BILLING_NOTIFICATION_SMTP_HOST": "127.0.0.1",
        "BILLING_NOTIFICATION_SMTP_PORT": str(relay.port),
        "BILLING_NOTIFICATION_SMTP_BACKOFF_SECONDS": SHORT_BACKOFF,
        "BILLING_NOTIFICATION_WEBHOOK_BACKOFF_SECONDS": SHORT_BACKOFF,
        "BILLING_NOTIFICATION_MAIL_FROM": SENDER,
        "BILLING_NOTIFICATION_COMPANY_NAME": COMPANY,
        "BILLING_NOTIFICATION_LINKS": json.dumps({"unsubscribe": UNSUBSCRIBE}),
        "BILLING_NOTIFICATION_RECEIPT_URL": RECEIPT_URL,
        **CHANNEL_TIMEOUTS,
        **env,
    }
    return NotifierRun(
        url=url,
        bootstrap=settings.kafka_bootstrap_servers,
        name=unique("notification"),  # a consumer group of its own
        billing=billing,
        invoices=invoices,
        changes=changes,
        env=values,
        log=tmp_path / "worker.log",
        settings=settings,
    )


def receipts_for(prefix: str, count: int) -> list[ReceiptIssuedEvent]:
    """``count`` USD receipts, each for a customer and address of its own."""
    return [
        receipt_issued(
            f"R-{prefix}-{i:04d}",
            customer_id=f"cus_{prefix}{i}",
            email=f"{prefix}.{i}@example.test",
            amount=900,
            currency="usd",
        )
        for i in range(count)
    ]


def receipt_key(receipt: ReceiptIssuedEvent) -> str:
    assert receipt.customer_id is not None
    return notice_key("receipt", str(receipt.id), receipt.customer_id)


def by_recipient(received: Sequence[Received]) -> dict[str, list[Received]]:
    found: dict[str, list[Received]] = {}
    for mail in received:
        for to in mail.rcpt_tos:
            found.setdefault(to, []).append(mail)
    return found


async def in_directory(run: NotifierRun, *customer_ids: str) -> bool:
    rows = await fetch(
        run.url,
        "SELECT customer_id FROM notification_contacts WHERE customer_id = ANY($1::text[])",
        list(customer_ids),
    )
    return len(rows) == len(customer_ids)


# -- 1. what the relay and the receiver get ------------------------------------------------


async def test_receipt_mails_and_signed_webhooks_as_the_servers_receive_them(
    settings: FleetSettings, create_database: Any, tmp_path: Path, relay: MailServer
) -> None:
    receiver = Receiver()
    await receiver.start()
    hook, old, new = unique("crm"), new_secret(), new_secret()
    # A rotation under way: both secrets sign every webhook.
    endpoints = write_endpoints(
        tmp_path / "endpoints.yaml",
        [endpoint(hook, receiver.url("/crm"), [old, new], ["receipt.*"])],
    )
    run = await prepare(
        settings,
        create_database,
        tmp_path,
        relay,
        BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH=str(endpoints),
    )
    suffix = unique("c").split("-")[1]
    us, jp, de, trialist = (f"cus_{country}{suffix}" for country in ("us", "jp", "de", "tr"))
    dollars = receipt_issued(
        "R-2026-000101",
        customer_id=us,
        email="sam@example.test",
        name="Sam Buyer",
        amount=900,
        currency="usd",
    )
    yen = receipt_issued(
        "R-2026-000102", customer_id=jp, email="ken@example.test", amount=1200, currency="jpy"
    )
    euros = receipt_issued("R-2026-000103", customer_id=de, email=None, amount=2000)
    german = customer_event(
        de,
        email="erika@example.test",
        name="Erika Muster",
        occurred_at=euros.occurred_at,
        metadata={"preferred_locales": "de"},
        event_type="customer.created",
    )
    trial_customer = customer_event(
        trialist, email="tess@example.test", occurred_at=euros.occurred_at
    )
    trial = fixture_event("customer.subscription.trial_will_end__nijikokun__1", trialist)
    worker = await run.started()
    try:
        await publish_events(run.bootstrap, run.billing, [german, trial_customer])
        await wait_for(
            lambda: in_directory(run, de, trialist), timeout=30, message="both in the directory"
        )
        # The trial notice needs the address the directory now has (its event has none).
        await publish_events(run.bootstrap, run.billing, [trial])
        await run.publish_receipts([dollars, yen, euros])

        async def all_arrived() -> bool:
            return len(relay.received) >= 4 and len(receiver.accepted) >= 3

        await wait_for(all_arrived, timeout=30, message="four mails and three webhooks")
    finally:
        stop_all([worker])
        await receiver.stop()
    assert worker.returncode == 0, tail(run.log)

    mails = by_recipient(relay.received)
    assert {to: len(got) for to, got in mails.items()} == {
        "sam@example.test": 1,
        "ken@example.test": 1,
        "erika@example.test": 1,
        "tess@example.test": 1,
    }
    [sam] = mails["sam@example.test"]
    assert sam.mail_from == SENDER
    mail, text, html = mail_parts(sam.content)
    assert mail["From"] == f"{COMPANY} <{SENDER}>"
    assert mail["To"] == "Sam Buyer <sam@example.test>"
    assert mail["Subject"] == f"Your {COMPANY} receipt R-2026-000101"
    assert mail["Message-ID"] == message_id_for(receipt_key(dollars), SENDER_DOMAIN)
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in mail  # never on a receipt
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    pdf = RECEIPT_URL.format(number="R-2026-000101")
    assert dollars.receipt.hosted_invoice_url
    for part in (text, html):
        assert "$9.00" in part
        assert pdf in part
        assert dollars.receipt.hosted_invoice_url in part
    assert f'<a href="{pdf}">' in html
    assert "Receipt number: R-2026-000101" in text

    _, ken_text, ken_html = mail_parts(mails["ken@example.test"][0].content)
    for part in (ken_text, ken_html):
        assert "¥1,200" in part and "1,200.00" not in part  # the yen has no minor unit

    erika, erika_text, erika_html = mail_parts(mails["erika@example.test"][0].content)
    assert erika["Subject"] == f"Ihre Quittung R-2026-000103 von {COMPANY}"
    assert erika["To"] == "Erika Muster <erika@example.test>"
    assert erika_text.startswith("Guten Tag Erika Muster,")
    assert "Quittungsnummer: R-2026-000103" in erika_text
    for part in (erika_text, erika_html):
        assert "20,00\xa0€" in part
        assert RECEIPT_URL.format(number="R-2026-000103") in part

    tess, tess_text, _ = mail_parts(mails["tess@example.test"][0].content)
    assert tess["Subject"].startswith(f"Your {COMPANY} trial ends on ")
    assert tess["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"  # an optional notice: it has one
    assert tess["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert tess["Message-ID"] == message_id_for(
        notice_key("trial_ending", trial.source.stripe_event_id, trialist), SENDER_DOMAIN
    )
    assert UNSUBSCRIBE in tess_text

    # One signed webhook per receipt.issued, each verifying under both secrets, both ways.
    by_id = {r.headers["webhook-id"]: r for r in receiver.received}
    assert receiver.ids("/crm") == {webhook_key(hook, str(r.id)): 1 for r in (dollars, yen, euros)}
    for receipt in (dollars, yen, euros):
        got = by_id[webhook_key(hook, str(receipt.id))]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        for secret in (old, new):
            assert Webhook(secret).verify(got.body, got.headers) == json.loads(got.body)
            assert verifies(secret, got.headers, got.body)
        assert not verifies(new_secret(), got.headers, got.body)
        assert json.loads(got.body) == cloudevent_payload(receipt, source=SOURCES[INVOICES])
        assert got.headers["content-type"] == "application/cloudevents+json"
    assert "sam@example.test" not in run.log.read_text()  # no address in the worker's log


# -- 2. outages pause only their destination -----------------------------------------------


async def test_an_smtp_outage_and_a_down_endpoint_delay_only_their_own_deliveries(
    settings: FleetSettings, create_database: Any, tmp_path: Path, relay: MailServer
) -> None:
    up, down = Receiver(), Receiver()  # two origins: one endpoint's outage is its own
    await up.start()
    await down.start()
    down.default = Answer(503)
    up_id, down_id = unique("up"), unique("down")
    endpoints = write_endpoints(
        tmp_path / "endpoints.yaml",
        [
            endpoint(up_id, up.url("/up"), [new_secret()], ["receipt.issued"]),
            endpoint(down_id, down.url("/down"), [new_secret()], ["receipt.issued"]),
        ],
    )
    run = await prepare(
        settings,
        create_database,
        tmp_path,
        relay,
        BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH=str(endpoints),
    )
    receipts = receipts_for(f"out{unique('x').split('-')[1]}", 30)
    addresses = {r.receipt.customer_email for r in receipts}
    worker = await run.started()
    try:
        relay.stop()  # connection refused from here on
        outage_began = time.monotonic()
        for burst in range(3):  # receipts keep coming during the outage
            await run.publish_receipts(receipts[burst * 10 : (burst + 1) * 10])
            await asyncio.sleep(2)

        async def up_has_all() -> bool:
            return len(up.ids("/up")) == 30

        await wait_for(up_has_all, timeout=20, message="the up endpoint keeps receiving")
        mail_rows = await run.rows("email")
        assert len(mail_rows) == 30 and {r["status"] for r in mail_rows} == {"pending"}
        assert any(r["attempts"] > 0 for r in mail_rows)  # tried during the outage
        assert relay.received == []
        assert down.ids("/down", down.requests)  # it was tried, and answered 503
        assert set(await run.statuses("webhook")) <= {"pending", "sent"}

        await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - outage_began)))
        relay.start()
        down.default = Answer(200)  # the down endpoint recovers too
        outage = time.monotonic() - outage_began

        async def all_mailed() -> bool:
            return set(by_recipient(relay.received)) == addresses

        await wait_for(all_mailed, timeout=30, message="every mail after the outage")

        async def down_has_all() -> bool:
            return len(down.ids("/down")) == 30

        await wait_for(down_has_all, timeout=20, message="the down endpoint after it recovers")

        async def all_sent() -> bool:
            return await run.statuses("email") == Counter(sent=30) and await run.statuses(
                "webhook"
            ) == Counter(sent=60)

        await wait_for(all_sent, timeout=10, message="every delivery marked sent")
    finally:
        stop_all([worker])
        await up.stop()
        await down.stop()
    assert worker.returncode == 0, tail(run.log)
    assert Counter(to for r in relay.received for to in r.rcpt_tos) == Counter(
        {address: 1 for address in addresses}
    )
    assert set(up.ids("/up").values()) == {1} and set(down.ids("/down").values()) == {1}
    assert await run.dead_letters() == []
    retried = [r for r in await run.rows("email") if r["attempts"] > 1]
    assert retried  # the outage was met with retries, none of them dead
    print(f"\nSMTP outage {outage:.1f} s: {len(retried)} of 30 mails retried, all sent once")


# -- 3. SIGKILL mid-send -----------------------------------------------------------------------


async def test_sigkill_mid_send_resends_only_the_unrecorded_with_the_same_message_id(
    settings: FleetSettings, create_database: Any, tmp_path: Path, relay: MailServer
) -> None:
    run = await prepare(
        settings,
        create_database,
        tmp_path,
        relay,
        BILLING_NOTIFICATION_SMTP_CONNECTIONS="4",
    )
    receipts = receipts_for(f"kill{unique('x').split('-')[1]}", 20)
    keys = {r.receipt.customer_email: receipt_key(r) for r in receipts}
    worker = await run.started()
    killed_at: list[float] = []

    def kill_at_the_twelfth(received: Received) -> None:
        # In the relay's thread, as it takes the 12th mail and before it answers 250: the
        # relay holds the mail, the worker never learns it was taken.
        if len(relay.received) == 12 and not killed_at:
            worker.send_signal(signal.SIGKILL)
            killed_at.append(time.monotonic())

    relay.recorder.on_accepted = kill_at_the_twelfth
    try:
        await run.publish_receipts(receipts)
        code = await asyncio.to_thread(worker.wait, 30)
        assert code == -signal.SIGKILL, tail(run.log)
    finally:
        if worker.poll() is None:
            worker.kill()
    relay.recorder.on_accepted = None
    before = {r["destination"]: r["status"] for r in await run.rows("email")}
    arrived_before = Counter(to for r in relay.received for to in r.rcpt_tos)
    recorded_sent = {to for to, status in before.items() if status == "sent"}

    restarted = await run.started()  # the same name and database
    try:

        async def all_sent() -> bool:
            return await run.statuses("email") == Counter(sent=20)

        await wait_for(all_sent, timeout=30, message="every mail after the restart")
        resent_after = time.monotonic() - killed_at[0]
    finally:
        stop_all([restarted])
    assert restarted.returncode == 0, tail(run.log)

    copies = by_recipient(relay.received)
    assert set(copies) == set(keys)  # no mail missing
    counts = Counter({to: len(got) for to, got in copies.items()})
    repeated = {to for to, n in counts.items() if n > 1}
    assert max(counts.values()) <= 2
    # A repeat is a mail the relay took before the kill that the worker had not marked
    # sent; one marked sent is never sent again.
    assert repeated <= {to for to in arrived_before if to not in recorded_sent}
    assert repeated, "the mail taken at the kill was not recorded: it must have repeated"
    for to, got in copies.items():
        assert {r.message["Message-ID"] for r in got} == {message_id_for(keys[to], SENDER_DOMAIN)}
        assert len({r.content for r in got}) == 1  # a repeat is the same bytes
    # Every event was handled once: the restart's redelivered records made no new rows.
    assert len(await run.rows("email")) == 20
    assert await run.dead_letters() == []
    print(
        f"\nSIGKILL window: {len(repeated)} of 20 mails repeated (relay had"
        f" {sum(arrived_before.values())}, {len(recorded_sent)} marked sent at the kill);"
        f" all sent {resent_after:.1f} s after the kill (lease"
        f" {CHANNEL_TIMEOUTS['BILLING_DELIVERY_LEASE_SECONDS']} s)"
    )


# -- 4. a permanent refusal, and a gone endpoint -----------------------------------------------


async def test_a_refused_recipient_fails_once_and_a_gone_endpoint_is_disabled(
    settings: FleetSettings, create_database: Any, tmp_path: Path, relay: MailServer
) -> None:
    gone_receiver = Receiver()
    await gone_receiver.start()
    answer_gone = asyncio.Event()
    gone_receiver.default = Answer(410, gate=answer_gone)
    gone = unique("gone")
    endpoints = write_endpoints(
        tmp_path / "endpoints.yaml",
        [endpoint(gone, gone_receiver.url("/gone"), [new_secret()], ["receipt.issued"])],
    )
    run = await prepare(
        settings,
        create_database,
        tmp_path,
        relay,
        BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH=str(endpoints),
        # One send per destination: the gone endpoint's other rows wait, unclaimed.
        BILLING_DELIVERY_PER_DESTINATION_CONCURRENCY="1",
        # The held 410 must not time out meanwhile.
        BILLING_DELIVERY_HTTP_TIMEOUT_SECONDS="10",
        BILLING_DELIVERY_LEASE_SECONDS="15",
    )
    receipts = receipts_for(f"bad{unique('x').split('-')[1]}", 5)
    refused = receipts[2].receipt.customer_email
    assert refused is not None
    relay.recorder.rcpt_answers[refused] = "550 5.1.1 No such user here"
    later = receipts_for(f"later{unique('x').split('-')[1]}", 1)[0]
    worker = await run.started()
    try:
        await run.publish_receipts(receipts)

        async def refused_and_others_sent() -> bool:
            return await run.statuses("email") == Counter(sent=4, failed=1)

        await wait_for(refused_and_others_sent, timeout=30, message="4 mails sent, 1 refused")

        # The gone endpoint's 410 is held until all five of its rows are queued.
        async def gone_rows_queued() -> bool:
            queued = len(await run.rows("webhook")) == 5
            return queued and sum(gone_receiver.requests.values()) == 1

        await wait_for(gone_rows_queued, timeout=20, message="five webhooks, one asked")
        answer_gone.set()

        async def webhooks_settled() -> bool:
            return await run.statuses("webhook") == Counter(failed=5)

        await wait_for(webhooks_settled, timeout=20, message="the gone endpoint's rows stopped")
        # A later mail goes through after the refusal had every chance to be retried.
        await run.publish_receipts([later])

        async def later_arrived() -> bool:
            return relay.recorder.arrived(str(later.receipt.customer_email)) == 1

        await wait_for(later_arrived, timeout=20, message="a later mail")
    finally:
        stop_all([worker])
        await gone_receiver.stop()
    assert worker.returncode == 0, tail(run.log)

    mails = {r["destination"]: r for r in await run.rows("email")}
    assert (mails[refused]["status"], mails[refused]["attempts"], mails[refused]["last_code"]) == (
        "failed",
        1,
        "550",
    )
    assert relay.recorder.rcpts[refused] == 1  # asked once, never again
    assert relay.recorder.arrived(refused) == 0
    others = [str(r.receipt.customer_email) for r in (*receipts, later) if r is not receipts[2]]
    assert [relay.recorder.arrived(address) for address in others] == [1] * 5

    # One request reached the gone endpoint; its 410 disabled it and stopped this worker's
    # four other queued rows without a request (the sender knows the worker's name), and
    # the later receipt's webhook failed without one.
    assert sum(gone_receiver.requests.values()) == 1
    hooks = {r["idempotency_key"]: r for r in await run.rows("webhook")}
    first = [hooks[webhook_key(gone, str(r.id))] for r in receipts]
    assert (
        sorted((r["last_code"], r["tried"]) for r in first) == [("410", 1)] + [("disabled", 0)] * 4
    )
    after = hooks[webhook_key(gone, str(later.id))]
    assert (after["status"], after["last_code"]) == ("failed", "disabled")
    [state] = await fetch(
        run.url,
        "SELECT disabled_at, disabled_reason FROM webhook_endpoints WHERE endpoint_id = $1",
        gone,
    )
    assert state["disabled_at"] is not None and "410" in state["disabled_reason"]
    assert await run.dead_letters() == []
