"""Receipt PDFs: the ``receipt_pdf`` channel against the invoice worker's real tables
(fresh PostgreSQL database), weasyprint in real render processes, PDFs read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from billing_fleet.money import format_money
from tests.conftest import CreateDatabase
from tests.deliveries_support import dispatching, statuses, write
from tests.http_receiver import HOLD, Receiver
from tests.invoice_receipts import (
    Invoice,
    Receipt,
    insert_invoice,
    insert_receipt,
    line,
    migrate_invoice_tables,
    pdf_text,
    stored_documents,
)
from tests.runtime_toy import unique, wait_for
from workers.invoice.documents.delivery import CHANNEL, DESTINATION
from workers.invoice.documents.pdf import PdfRenderer, RenderUnavailable
from workers.invoice.documents.sender import (
    INVOICE_WAIT_SECONDS,
    POLICY,
    ReceiptDocumentSender,
    last_attempt_after,
)
from workers.invoice.settings import InvoiceSettings
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult

pytestmark = pytest.mark.integration

# Far beyond the sender's own bounds below: reaching it means a send hung.
HANG_GUARD_SECONDS = 60.0


def receipt_delivery(number: str) -> Delivery:
    """What the invoice worker's handler returns for receipt ``number``."""
    return Delivery(
        CHANNEL,
        DESTINATION,
        f"receipt-pdf:{number}",
        number.encode(),
        metadata={"number": number},
    )


def long_html(rows: int) -> str:
    """A table weasyprint lays out for about 2 ms per row."""
    return "<table>" + "<tr><td>row</td><td>cell</td></tr>" * rows + "</table>"


async def send(sender: Sender, number: str) -> SendResult:
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        return await sender.send(receipt_delivery(number))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def invoice_db(create_database: CreateDatabase) -> str:
    url = await create_database()
    await migrate_invoice_tables(url)
    return url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sender(invoice_db: str) -> AsyncIterator[ReceiptDocumentSender]:
    """One sender for the module's tests (its render process is started once)."""
    channel = ReceiptDocumentSender(
        InvoiceSettings(
            database_url=invoice_db,
            invoice_seller_name="Example Shop Ltd",
            invoice_seller_address="1 Market Street\nCambridge CB2 1AB",
            invoice_seller_tax_id="GB123456789",
        )
    )
    yield channel
    await channel.aclose()


async def test_a_receipt_issued_before_its_customer_shows_the_payment_s_customer(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    number = await insert_receipt(
        invoice_db,
        Receipt(500, "eur", customer=("Grace Hopper", "grace@example.com"),
                customer_on_receipt=False),
    )  # fmt: skip
    assert await send(sender, number) == SendResult("sent")
    [row] = await stored_documents(invoice_db, number)
    text = pdf_text(row["pdf"])
    assert "Grace Hopper" in text and "grace@example.com" in text, text


async def test_a_receipt_is_rendered_and_stored(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    number = await insert_receipt(
        invoice_db,
        Receipt(
            1999,
            "usd",
            description="Subscription update",
            card=("visa", "4242"),
            customer=("Ada Lovelace", "ada@example.com"),
            invoice=Invoice("INV-0042", (line("Pro seat", 2, 900),), subtotal=1800, tax=199),
        ),
    )
    result = await send(sender, number)
    assert result == SendResult("sent")
    [row] = await stored_documents(invoice_db, number)
    assert row["pdf"].startswith(b"%PDF-")
    text = pdf_text(row["pdf"])
    for shown in (
        number,
        "$19.99",
        "USD",
        "Example Shop Ltd",
        "1 Market Street",
        "GB123456789",
        "INV-0042",
        "Pro seat",
        "$9.00",
        "$18.00",
        "$1.99",
        "Ada Lovelace",
        "ada@example.com",
        "Visa",
        "4242",
        "March 14, 2026",
    ):
        assert shown in text, (shown, text)


async def test_a_second_send_stores_nothing_new(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    number = await insert_receipt(invoice_db, Receipt(500, "eur", description="Top-up"))
    assert (await send(sender, number)).outcome == "sent"
    [first] = await stored_documents(invoice_db, number)
    again = await send(sender, number)  # a redelivery after a crash before it was recorded
    assert again == SendResult("sent", detail="stored already")
    assert await stored_documents(invoice_db, number) == [first]


async def test_sends_racing_for_one_receipt_store_one_pdf(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    number = await insert_receipt(invoice_db, Receipt(4200, "gbp", description="Race"))
    results = await asyncio.gather(send(sender, number), send(sender, number))
    assert [result.outcome for result in results] == ["sent", "sent"]
    [row] = await stored_documents(invoice_db, number)
    assert "£42.00" in pdf_text(row["pdf"])


@pytest.mark.parametrize(
    ("amount", "currency", "shown", "code"),
    [(1500, "jpy", "¥1,500", "JPY"), (1234, "kwd", "KWD1.234", "KWD")],
)
async def test_zero_and_three_decimal_currencies(
    invoice_db: str,
    sender: ReceiptDocumentSender,
    amount: int,
    currency: str,
    shown: str,
    code: str,
) -> None:
    number = await insert_receipt(
        invoice_db, Receipt(amount, currency, description="Lifetime licence")
    )
    assert (await send(sender, number)).outcome == "sent"
    [row] = await stored_documents(invoice_db, number)
    text = pdf_text(row["pdf"])
    assert number in text and shown in text and f"Total paid ({code})" in text, text
    assert "Lifetime licence" in text


async def test_the_templates_dir_overrides_the_shipped_template(
    invoice_db: str, tmp_path: Path
) -> None:
    (tmp_path / "receipt.html.j2").write_text(
        "<h1>Custom receipt {{ receipt.number }}</h1>"
        "<p>{{ receipt.amount | money(receipt.currency) }}"
        " {{ receipt.currency | currency_code }}</p>"
    )
    settings = InvoiceSettings(database_url=invoice_db, invoice_templates_dir=tmp_path)
    number = await insert_receipt(invoice_db, Receipt(1999, "usd"))
    override = ReceiptDocumentSender(settings)
    try:
        assert (await send(override, number)).outcome == "sent"
    finally:
        await override.aclose()
    [row] = await stored_documents(invoice_db, number)
    assert pdf_text(row["pdf"]) == f"Custom receipt {number} $19.99 USD"


async def test_a_receipt_waits_for_the_invoice_its_payment_names(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    """The payment's events came first: a retry until the invoice is in the ledger, then
    the PDF shows Stripe's invoice number and lines."""
    invoice_id = unique("in")
    number = await insert_receipt(
        invoice_db, Receipt(1200, "eur", description="Paid early", invoice_id=invoice_id)
    )
    waiting = await send(sender, number)
    assert waiting == SendResult("retry", detail=f"invoice {invoice_id} not in the ledger yet")
    assert await stored_documents(invoice_db, number) == []

    await insert_invoice(invoice_db, invoice_id, "INV-LATE", line("Late line", 1, 1200))
    assert await send(sender, number) == SendResult("sent")
    [row] = await stored_documents(invoice_db, number)
    text = pdf_text(row["pdf"])
    assert "INV-LATE" in text and "Late line" in text, text


async def test_after_the_invoice_wait_a_receipt_is_rendered_without_it(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    """Issued longer ago than the wait: rendered with the payment's description, so an
    invoice that never comes costs the receipt its invoice number, not its PDF."""
    issued = datetime.now(UTC) - timedelta(seconds=INVOICE_WAIT_SECONDS + 60)
    number = await insert_receipt(
        invoice_db,
        Receipt(1200, "eur", description="Paid alone", invoice_id=unique("in"), issued_at=issued),
    )
    assert await send(sender, number) == SendResult("sent")
    [row] = await stored_documents(invoice_db, number)
    assert "Paid alone" in pdf_text(row["pdf"])


async def test_the_invoice_wait_ends_before_the_last_attempt(invoice_db: str) -> None:
    """Else a receipt waiting for its invoice could be dead before it renders."""
    assert last_attempt_after(POLICY) > INVOICE_WAIT_SECONDS
    settings = InvoiceSettings(database_url=invoice_db)
    short = RetryPolicy((1.0, 5.0), 5)  # the last attempt 16 s after the first, 12.8 at least
    assert last_attempt_after(short) == pytest.approx(12.8)
    with pytest.raises(ValueError, match="must end before the policy's last attempt"):
        ReceiptDocumentSender(settings, policy=short)
    await ReceiptDocumentSender(settings, policy=short, invoice_wait=12.0).aclose()


async def test_no_such_receipt_fails(invoice_db: str, sender: ReceiptDocumentSender) -> None:
    result = await send(sender, "R-1999-999999")
    assert result == SendResult("failed", detail="no receipt R-1999-999999")


async def test_a_delivery_naming_no_receipt_fails(sender: ReceiptDocumentSender) -> None:
    delivery = Delivery(CHANNEL, DESTINATION, "receipt-pdf:", b"")
    result = await sender.send(delivery)
    assert result.outcome == "failed" and result.detail == "the delivery names no receipt number"


async def test_a_receipt_that_does_not_render_fails_with_the_reason(
    invoice_db: str, sender: ReceiptDocumentSender
) -> None:
    number = await insert_receipt(invoice_db, Receipt(100, "xyz", description="Bad currency"))
    result = await send(sender, number)
    assert result.outcome == "failed"
    assert result.detail is not None and result.detail.startswith("template: UnknownCurrency")
    assert "'xyz'" in result.detail
    assert await stored_documents(invoice_db, number) == []


async def test_the_dispatcher_sends_the_handlers_delivery(invoice_db: str, tmp_path: Path) -> None:
    """End to end on the runtime's side: the row a handler wrote, claimed and sent by
    the real dispatcher over this channel, the PDF stored."""
    worker = unique("invoice")
    number = await insert_receipt(invoice_db, Receipt(2500, "chf", description="Dispatched"))
    await write(invoice_db, worker, [receipt_delivery(number)])
    channel = ReceiptDocumentSender(InvoiceSettings(database_url=invoice_db))
    async with dispatching(invoice_db, worker, channel, channel=CHANNEL):

        async def sent() -> bool:
            return (await statuses(invoice_db, worker)) == {f"receipt-pdf:{number}": "sent"}

        await wait_for(sent, timeout=HANG_GUARD_SECONDS, message="the receipt row sent")
    [row] = await stored_documents(invoice_db, number)
    assert format_money(2500, "chf") in pdf_text(row["pdf"])


async def test_postgresql_refusing_connections_is_a_retry() -> None:
    refused = Receiver()  # not started: nothing listens on its port
    settings = InvoiceSettings(database_url=f"postgresql://postgres@127.0.0.1:{refused.port}/x")
    channel = ReceiptDocumentSender(settings, db_timeout=0.5)
    try:
        result = await send(channel, "R-2026-000001")
    finally:
        await channel.aclose()
    assert result.outcome == "retry"
    assert result.detail is not None and result.detail.startswith("PostgreSQL: ")
    assert "Connect call failed" in result.detail or "Connection refused" in result.detail


async def test_postgresql_stalled_is_a_retry_at_the_sender_deadline() -> None:
    """A server that accepts and never answers: only the sender's own deadline (0.5 s,
    the detail's TimeoutError) ends the send, far before the hang guard."""
    stalled = Receiver()
    stalled.default = HOLD  # reads the startup message, answers nothing
    await stalled.start()
    settings = InvoiceSettings(database_url=f"postgresql://postgres@127.0.0.1:{stalled.port}/x")
    channel = ReceiptDocumentSender(settings, db_timeout=0.5)
    try:
        result = await send(channel, "R-2026-000001")
    finally:
        await channel.aclose()
        await stalled.stop()
    assert result == SendResult("retry", detail="PostgreSQL: TimeoutError")


async def test_a_render_past_its_time_limit_is_stopped_and_the_next_one_renders() -> None:
    renderer = PdfRenderer(processes=1, timeout_seconds=2.0)
    try:
        with pytest.raises(RenderUnavailable, match="longer than 2 s"):
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                await renderer.render(long_html(10_000))  # some 20 s of layout
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            pdf = await renderer.render("<p>after</p>")  # the same process, stopped in time
        assert pdf_text(pdf) == "after"
    finally:
        await renderer.aclose()


async def test_a_render_process_that_dies_is_a_retry_and_replaced() -> None:
    renderer = PdfRenderer(processes=1, timeout_seconds=30.0)
    try:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            task = asyncio.create_task(renderer.render(long_html(5_000)))
            pool = None
            while pool is None or not pool._processes:
                await asyncio.sleep(0.05)
                pool = renderer._pool
            for process in list(pool._processes.values()):
                process.kill()
            with pytest.raises(RenderUnavailable, match="a render process died"):
                await task
            assert pdf_text(await renderer.render("<p>again</p>")) == "again"
    finally:
        await renderer.aclose()
