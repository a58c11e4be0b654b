"""The invoice worker's handler: billing events in, ledger rows, receipts and
``invoices.v1`` events out.

Per event type (entitlement summaries are acknowledged without effect):

- ``invoice.*``: the invoice row (newest wins, see ``rules``), naming its payment from its
  links when it names none itself; payments naming its payment intent or charge get its id
  as ``invoice_id``.
- ``invoice_payment.paid``: the link (``ledger_invoice_payments``, no event of its own);
  the payments it names get its invoice as ``invoice_id``, the invoice (when in the
  ledger and naming no payment) its intent and charge. Since basil nothing else links
  them, and each of the three may come first.
- ``payment.*``: the payment row; its ``invoice_id`` from an invoice naming its intent or
  charge, else from a link naming it; the refunds a ``payment.refunded`` lists; refunds
  and disputes naming its intent or charge are attached (``payment_id``, and the
  payment's customer). A payment that is ``succeeded`` and has no receipt gets one
  (``receipts``).
- ``refund.*``, ``dispute.*``: the row, attached to its payment when that is in the ledger
  (else kept with ``payment_id`` NULL until it comes).
- ``subscription.*``: the subscription row (a billing record: no event emitted).
- ``customer.*``, ``checkout.completed``: the customer's user mapping and contact details
  (no event emitted).

Each ledger row an event created or changed (its content, not just its marks) is one
``invoices.v1`` event typed by the transition (``rules.invoice_change`` and friends), in
the order the rows were touched, then ``receipt.issued`` and the receipt's document
``Delivery``.

``handle_batch`` is the one code path (``handle`` is a batch of one): it locks the ids and
references the batch names (its customers, payment intents and charges; an object's own
id when it names neither), loads the rows they name (``store.load``), applies each event in
order to that in-memory copy (``state``) exactly as one event at a time would, writes back
what changed (``store.save``), then numbers the receipts it decided.

Rows are written whole (upserts of the in-memory copy), so two batches must never write one
row at once: every row a batch writes is covered by a lock that every other writer of that
row takes too.

- An invoice: its events and its links (``invoice_payment.paid``) lock the invoice's id.
- A payment: its events lock its id (the intent's, else the charge's). An invoice or link
  that finds it by its intent holds that id too; one that finds it by a charge (the
  payment's id is its intent's) holds it because the batch reads, before locking, the
  payments with the charges its invoices and links name, and locks their ids. A payment
  that gets such a charge between that read and the lock (a concurrent batch committed it)
  is found under the lock with its id unlocked: the batch then raises
  ``DependencyFailure`` before writing, and the runtime retries it (the read then finds it).
- A refund or dispute: found by its charge or intent, which never change, and which its
  own events lock (its own id when it names neither), as does a payment event that finds
  it by them or lists it (a listed refund's id is locked too).
- A customer or subscription: its customer's id, which every event writing it names; a
  link: its invoice's id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import asyncpg

from contracts import (
    BillingEvent,
    CheckoutEvent,
    CustomerEvent,
    DisputeEvent,
    InvoiceEvent,
    InvoicePaymentEvent,
    PaymentEvent,
    RefundEvent,
    SubscriptionEvent,
)
from workers.invoice import emit, receipts, rules, store
from workers.invoice.receipts import PendingReceipt
from workers.invoice.rows import (
    CustomerRow,
    DisputeRow,
    InvoiceRow,
    PaymentRow,
    RefundRow,
    content,
)
from workers.invoice.state import Ledger, Names
from workers.runtime.failures import DependencyFailure
from workers.runtime.spec import Effect, Outgoing

LedgerEffect = Outgoing | PendingReceipt

_LEDGER_EVENTS = (
    InvoiceEvent,
    PaymentEvent,
    RefundEvent,
    DisputeEvent,
    SubscriptionEvent,
    CustomerEvent,
    CheckoutEvent,
    InvoicePaymentEvent,
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class InvoiceHandler:
    def __init__(self, *, receipt_prefix: str, clock: Callable[[], datetime] = _utcnow) -> None:
        self.prefix = receipt_prefix
        self.clock = clock

    # -- entry points --------------------------------------------------------------------

    async def handle(self, conn: asyncpg.Connection, event: BillingEvent) -> Sequence[Effect]:
        return await self.handle_batch(conn, [event])

    async def handle_batch(
        self, conn: asyncpg.Connection, events: Sequence[BillingEvent]
    ) -> list[Effect]:
        """The effects of ``handle`` for each event in order, set-based: lock, load the
        rows the batch names, apply in memory, save, number the receipts."""
        relevant = [event for event in events if isinstance(event, _LEDGER_EVENTS)]
        if not relevant:
            return []
        locks: set[str] = set()
        names = Names()
        linked_charges: set[str] = set()
        for event in relevant:
            _references(event, locks, names, linked_charges)
        if linked_charges:
            # The payments an invoice or link will find by charge, and write: their ids.
            locks |= await store.payments_with_charges(conn, linked_charges)
        await store.lock(conn, locks)
        ledger = await store.load(
            conn,
            names,
            invoices=_any(relevant, InvoiceEvent, PaymentEvent, InvoicePaymentEvent),
            payments=_any(
                relevant, InvoiceEvent, PaymentEvent, RefundEvent, DisputeEvent, InvoicePaymentEvent
            ),
            refunds=_any(relevant, PaymentEvent, RefundEvent),
            disputes=_any(relevant, PaymentEvent, DisputeEvent),
            subscriptions=_any(relevant, SubscriptionEvent),
            customers=_any(relevant, CustomerEvent, CheckoutEvent, PaymentEvent),
            invoice_payments=_any(relevant, InvoiceEvent, PaymentEvent, InvoicePaymentEvent),
        )
        decided: list[LedgerEffect] = []
        for event in relevant:
            decided += self._apply(ledger, event)
        _check_locked(ledger, locks)
        await store.save(conn, ledger)
        pending = [effect for effect in decided if isinstance(effect, PendingReceipt)]
        numbered = iter(await receipts.number(conn, pending) if pending else [])
        effects: list[Effect] = []
        for effect in decided:
            if isinstance(effect, PendingReceipt):
                receipt = next(numbered)
                effects.append(emit.receipt_record(receipt, effect))
                effects.append(receipts.document_delivery(receipt.number))
            else:
                effects.append(effect)
        return effects

    def _apply(self, ledger: Ledger, event: BillingEvent) -> list[LedgerEffect]:
        ledger.begin_event()
        match event:
            case InvoiceEvent():
                self._invoice(ledger, event)
            case InvoicePaymentEvent():
                _invoice_payment(ledger, event)
            case PaymentEvent():
                receipt = self._payment(ledger, event)
                return [*_changes(ledger, event), *receipt]
            case RefundEvent():
                self._refund(ledger, event)
            case DisputeEvent():
                self._dispute(ledger, event)
            case SubscriptionEvent():
                _subscription(ledger, event)
            case CustomerEvent():
                _customer(ledger, event)
            case CheckoutEvent():
                _checkout(ledger, event)
            case _:
                return []
        return list(_changes(ledger, event))

    # -- per family ----------------------------------------------------------------------

    def _invoice(self, ledger: Ledger, event: InvoiceEvent) -> None:
        new = rules.invoice_row(event)
        stored = ledger.invoices.rows.get(new.invoice_id)
        merged = rules.merge_invoice(stored, new)
        merged = rules.linked_invoice(merged, ledger.links_of(merged.invoice_id))
        if merged != stored:
            ledger.put_invoice(merged)
        _link_payments(ledger, merged.invoice_id, (merged.payment_intent_id, merged.charge_id))

    def _payment(self, ledger: Ledger, event: PaymentEvent) -> list[PendingReceipt]:
        new = rules.payment_row(event)
        stored = ledger.payments.rows.get(new.payment_id)
        merged = rules.merge_payment(stored, new)
        refs = (new.payment_id, new.payment_intent_id, new.charge_id)
        if merged.invoice_id is None:
            named = ledger.invoices.find(refs) or ledger.invoice_payments.find(refs)
            if named:
                merged = merged._replace(invoice_id=named[0].invoice_id)
        if merged != stored:
            ledger.put_payment(merged)
        for refund in event.payment.refunds:
            listed = rules.refund_row(refund, event, payment=event.payment)
            row = rules.merge_refund(ledger.refunds.rows.get(refund.id), listed)
            _put_refund(ledger, rules.attached(row, merged))
        for found in ledger.refunds.find(refs):
            if found.payment_id in (None, merged.payment_id):
                _put_refund(ledger, rules.attached(found, merged))
        for dispute in ledger.disputes.find(refs):
            if dispute.payment_id in (None, merged.payment_id):
                _put_dispute(ledger, rules.attached(dispute, merged))
        if merged.status != rules.SUCCEEDED or merged.payment_id in ledger.receipted:
            return []
        ledger.receipted.add(merged.payment_id)
        invoice = ledger.invoices.rows.get(merged.invoice_id) if merged.invoice_id else None
        customer = ledger.customers.rows.get(merged.customer_id) if merged.customer_id else None
        paid_at = rules.receipt_paid_at(event, merged)
        return [
            PendingReceipt(merged, invoice, customer, self.clock(), event, self.prefix, paid_at)
        ]

    def _refund(self, ledger: Ledger, event: RefundEvent) -> None:
        refund = event.refund
        row = rules.merge_refund(
            ledger.refunds.rows.get(refund.id), rules.refund_row(refund, event)
        )
        payment = _payment_of(ledger, row.payment_id, (refund.payment_intent_id, refund.charge_id))
        _put_refund(ledger, rules.attached(row, payment) if payment is not None else row)

    def _dispute(self, ledger: Ledger, event: DisputeEvent) -> None:
        dispute = event.dispute
        row = rules.merge_dispute(ledger.disputes.rows.get(dispute.id), rules.dispute_row(event))
        payment = _payment_of(
            ledger, row.payment_id, (dispute.payment_intent_id, dispute.charge_id)
        )
        _put_dispute(ledger, rules.attached(row, payment) if payment is not None else row)


# -- rows without events of their own ---------------------------------------------------------


def _invoice_payment(ledger: Ledger, event: InvoicePaymentEvent) -> None:
    new = rules.invoice_payment_row(event)
    stored = ledger.invoice_payments.rows.get(new.invoice_payment_id)
    link = rules.merge_invoice_payment(stored, new)
    if link != stored:
        ledger.invoice_payments.put(link.invoice_payment_id, link)
    invoice = ledger.invoices.rows.get(link.invoice_id)
    if invoice is not None:
        linked = rules.linked_invoice(invoice, ledger.links_of(link.invoice_id))
        if linked != invoice:
            ledger.put_invoice(linked)
    _link_payments(ledger, link.invoice_id, (link.payment_intent_id, link.charge_id))


def _link_payments(ledger: Ledger, invoice_id: str, refs: tuple[str | None, ...]) -> None:
    """Payments that ``refs`` name and that name no invoice yet: ``invoice_id``'s."""
    for payment in ledger.payments.find(refs):
        if payment.invoice_id is None:
            ledger.put_payment(payment._replace(invoice_id=invoice_id))


def _subscription(ledger: Ledger, event: SubscriptionEvent) -> None:
    new = rules.subscription_row(event)
    stored = ledger.subscriptions.rows.get(new.subscription_id)
    merged = rules.merge_subscription(stored, new)
    if merged != stored:
        ledger.subscriptions.put(merged.subscription_id, merged)


def _customer(ledger: Ledger, event: CustomerEvent) -> None:
    customer_id = event.customer.id
    stored = ledger.customers.rows.get(customer_id)
    merged = rules.merge_customer(stored or CustomerRow(customer_id), event)
    if merged != stored:
        ledger.customers.put(customer_id, merged)


def _checkout(ledger: Ledger, event: CheckoutEvent) -> None:
    if not event.customer_id:
        return  # a guest checkout maps no customer
    row = ledger.customers.rows.get(event.customer_id) or CustomerRow(event.customer_id)
    merged = rules.merge_checkout_user(row, event)
    if merged != row:
        ledger.customers.put(event.customer_id, merged)


# -- helpers ---------------------------------------------------------------------------------


def _put_refund(ledger: Ledger, row: RefundRow) -> None:
    if row != ledger.refunds.rows.get(row.refund_id):
        ledger.put_refund(row)


def _put_dispute(ledger: Ledger, row: DisputeRow) -> None:
    if row != ledger.disputes.rows.get(row.dispute_id):
        ledger.put_dispute(row)


def _payment_of(
    ledger: Ledger, payment_id: str | None, refs: tuple[str | None, ...]
) -> PaymentRow | None:
    """The payment a refund or dispute belongs to, among those its references name: the
    one it is attached to, else the first."""
    found = ledger.payments.find(refs)
    if payment_id is not None:
        return next((p for p in found if p.payment_id == payment_id), None)
    return found[0] if found else None


def _changes(ledger: Ledger, cause: BillingEvent) -> Iterable[Outgoing]:
    """The ``invoices.v1`` events of the rows ``cause`` changed, in the order it put them."""
    stripe_id = cause.source.stripe_event_id
    for (kind, key), old in ledger.touched.items():
        if kind == "invoice":
            invoice = ledger.invoices.rows[key]
            if isinstance(old, InvoiceRow) and content(old) == content(invoice):
                continue
            won = invoice.mark.event_id == stripe_id
            event_type = rules.invoice_change(
                old if isinstance(old, InvoiceRow) else None, invoice, cause.type, won
            )
            yield emit.invoice_record(invoice, event_type, cause)
        elif kind == "payment":
            payment = ledger.payments.rows[key]
            before = old if isinstance(old, PaymentRow) else None
            if before is not None and content(before) == content(payment):
                continue
            for payment_type in rules.payment_changes(before, payment):
                yield emit.payment_record(payment, payment_type, cause)
        elif kind == "refund":
            refund = ledger.refunds.rows[key]
            was = old if isinstance(old, RefundRow) else None
            if was is not None and content(was) == content(refund):
                continue
            yield emit.refund_record(refund, rules.refund_change(was), cause)
        else:
            dispute = ledger.disputes.rows[key]
            had = old if isinstance(old, DisputeRow) else None
            if had is not None and content(had) == content(dispute):
                continue
            yield emit.dispute_record(dispute, rules.dispute_change(had, dispute), cause)


def _check_locked(ledger: Ledger, locks: set[str]) -> None:
    """Every invoice and payment the batch is about to write has its id locked (see the
    module's docstring); else a concurrent batch linked one meanwhile: roll back, retry."""
    unlocked = (ledger.invoices.changed | ledger.payments.changed) - locks
    if unlocked:
        raise DependencyFailure(
            f"rows linked by a concurrent batch after they were read: {sorted(unlocked)[:5]}"
        )


def _any(events: Sequence[BillingEvent], *kinds: type) -> bool:
    return any(isinstance(event, kinds) for event in events)


def _references(
    event: BillingEvent, locks: set[str], names: Names, linked_charges: set[str]
) -> None:
    """Add what ``event`` must lock (its customer and payment references: the rows events
    of other Kafka keys may write too; its object's id when it names neither, an invoice's
    id always), the ids its rows are found by (``store.load``), and the charges through
    which it may write payments whose ids it does not know (``linked_charges``)."""
    own: str | None = None
    refs: list[str | None] = []
    match event:
        case InvoiceEvent():
            invoice = event.invoice
            own, refs = invoice.id, [invoice.payment_intent_id, invoice.charge_id]
            names.invoices.add(invoice.id)
            # A link (invoice_payment.paid, on another key) writes this row too: both
            # lock the invoice's id.
            locks.add(invoice.id)
            if invoice.charge_id:
                linked_charges.add(invoice.charge_id)
        case InvoicePaymentEvent():
            link = event.invoice_payment
            own, refs = link.id, [link.payment_intent_id, link.charge_id]
            names.invoices.add(link.invoice_id)
            names.invoice_payments.add(link.id)
            locks.add(link.invoice_id)  # it writes the invoice's row
            if link.charge_id:
                linked_charges.add(link.charge_id)
        case PaymentEvent():
            payment = event.payment
            refs = [payment.id, payment.payment_intent_id, payment.charge_id]
            for refund in payment.refunds:
                names.refunds.add(refund.id)
                locks.add(refund.id)  # as its own events do when it names no charge
                refs += (refund.charge_id, refund.payment_intent_id)
            if payment.invoice_id:
                names.invoices.add(payment.invoice_id)
        case RefundEvent():
            refund = event.refund
            own, refs = refund.id, [refund.charge_id, refund.payment_intent_id]
            names.refunds.add(refund.id)
        case DisputeEvent():
            dispute = event.dispute
            own, refs = dispute.id, [dispute.charge_id, dispute.payment_intent_id]
            names.disputes.add(dispute.id)
        case SubscriptionEvent():
            own = event.subscription.id
            names.subscriptions.add(own)
        case CustomerEvent():
            own = event.customer.id
    held = {ref for ref in refs if ref}
    names.refs |= held
    if event.customer_id:
        held.add(event.customer_id)
        names.customers.add(event.customer_id)
    if isinstance(event, CustomerEvent):
        names.customers.add(event.customer.id)
    locks |= held or ({own} if own else set())
