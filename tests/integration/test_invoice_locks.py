"""The invoice worker's row locks on real PostgreSQL, with concurrent transactions: a batch
holds the lock of every payment it writes, also one its invoice finds only by a charge
(the payment's id is its intent's), and a payment linked to such a charge by a batch that
committed while this one waited is a retry, not a write under a lock nobody else takes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from contracts import BillingEvent
from tests.conftest import CreateDatabase
from tests.invoice_support import at, fixed_clock, invoice, invoice_event, payment, payment_event
from tests.runtime_toy import wait_for
from workers.invoice.handler import InvoiceHandler
from workers.invoice.store import LOCK_CLASS
from workers.runtime.failures import DependencyFailure, is_dependency_failure

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

HANDLER = InvoiceHandler(receipt_prefix="R", clock=fixed_clock)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def locks_db(create_database: CreateDatabase) -> str:
    """A database of this module's own: its tests commit."""
    url: str = await create_database(migrated=True)
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def connections(locks_db: str) -> AsyncIterator[list[asyncpg.Connection]]:
    conns = [await asyncpg.connect(locks_db) for _ in range(3)]
    try:
        yield conns
    finally:
        for conn in conns:
            await conn.close()


def ids() -> tuple[str, str, str, str]:
    key = uuid.uuid4().hex[:10]
    return f"cus_{key}", f"pi_{key}", f"ch_{key}", f"in_{key}"


def paid(customer: str, pi: str, charge: str) -> BillingEvent:
    return payment_event(
        "payment.succeeded", payment(pi, charge=charge), customer_id=customer,
        occurred_at=at("2026-02-01T10:00:01"),
    )  # fmt: skip


def charge_only_invoice(customer: str, charge: str, invoice_id: str) -> BillingEvent:
    """An invoice that names its payment's charge but not its intent."""
    inv = invoice(invoice_id, status="paid").model_copy(update={"charge_id": charge})
    return invoice_event("invoice.paid", inv, customer_id=customer,
                         occurred_at=at("2026-02-01T10:00:02"))  # fmt: skip


async def held_by_another(conn: asyncpg.Connection, key: str) -> bool:
    """Whether another transaction holds the worker's lock on ``key``."""
    async with conn.transaction():
        free: bool = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, key
        )
    return not free


async def test_an_invoice_naming_a_charge_locks_the_payment_it_writes(
    connections: list[asyncpg.Connection],
) -> None:
    batch, other, _ = connections
    customer, pi, charge, invoice_id = ids()
    async with batch.transaction():
        await HANDLER.handle_batch(batch, [paid(customer, pi, charge)])

    transaction = batch.transaction()
    await transaction.start()
    try:
        await HANDLER.handle_batch(batch, [charge_only_invoice(customer, charge, invoice_id)])
        linked = await batch.fetchval(
            "SELECT invoice_id FROM ledger_payments WHERE payment_id = $1", pi
        )
        assert linked == invoice_id
        # The payment's own id, which every event of the payment locks: not only the charge.
        assert await held_by_another(other, pi)
        assert await held_by_another(other, charge) and await held_by_another(other, invoice_id)
    finally:
        await transaction.rollback()
    assert not await held_by_another(other, pi)


async def test_a_payment_linked_to_the_charge_meanwhile_makes_the_batch_retry(
    connections: list[asyncpg.Connection],
) -> None:
    """The payment's batch holds the charge and commits while the invoice's waits for it:
    the invoice's batch did not see that payment before locking, so it is retried; the
    retry locks the payment's id and links it."""
    first, second, watcher = connections
    customer, pi, charge, invoice_id = ids()
    payment_tx = first.transaction()
    await payment_tx.start()
    await HANDLER.handle_batch(first, [paid(customer, pi, charge)])  # holds pi and the charge

    async def invoice_batch() -> None:
        async with second.transaction():
            await HANDLER.handle_batch(second, [charge_only_invoice(customer, charge, invoice_id)])

    waiting = asyncio.create_task(invoice_batch())
    pid = second.get_server_pid()

    async def blocked() -> bool:
        state = await watcher.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
        )
        return bool(state == "Lock")

    try:
        await wait_for(blocked, timeout=20.0, message="the invoice's batch waiting for a lock")
    finally:
        await payment_tx.commit()
    with pytest.raises(DependencyFailure) as raised:
        await asyncio.wait_for(waiting, timeout=20.0)
    assert is_dependency_failure(raised.value)  # the runtime retries the batch, no DLT
    unlinked = await watcher.fetchval(
        "SELECT invoice_id FROM ledger_payments WHERE payment_id = $1", pi
    )
    assert unlinked is None  # rolled back: nothing written under the wrong locks

    await invoice_batch()  # the retry
    linked = await watcher.fetchval(
        "SELECT invoice_id FROM ledger_payments WHERE payment_id = $1", pi
    )
    assert linked == invoice_id
