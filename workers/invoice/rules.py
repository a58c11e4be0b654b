"""Pure ledger decisions: ranks, marks, the merge of an event into a row, and how a change
is typed on ``invoices.v1``. No I/O, no clock.

Order of events
---------------
Stripe delivers out of order, redelivers, and stamps events to the second. Every ledger
row (an invoice, a payment, a refund, a dispute, a subscription) keeps the ``Mark`` of the
newest event applied to it, and an event replaces the row's snapshot only when its mark
is greater. Marks compare by

1. the rank of the status the event reports, so states only move forward::

       invoice       draft/None 0 < open 1 < uncollectible 2 < paid 3 < void 4
       payment       pending, processing, requires_* 0 < failed, canceled 1 < succeeded 2
       refund        pending, requires_action 0 < succeeded, failed, canceled 1
       dispute       open states 0 < won, lost, warning_closed, prevented 1
       subscription  others 0 < canceled, incomplete_expired 1

   (an unknown status ranks 0). A payment's status is the ledger's: ``payment.failed``
   means ``failed`` (``canceled`` if Stripe says so) whatever the intent's own status,
   ``payment.succeeded`` means ``succeeded``; a paid invoice never returns to open, a
   void one stays void, a succeeded payment never fails;
2. the event's time (``occurred_at``, Stripe's ``event.created``);
3. the precedence of its type, for events of the same second::

       invoice.created (0) < invoice.finalized (1) < invoice.payment_failed (2)
         < invoice.marked_uncollectible (3) < invoice.paid (4) < invoice.voided (5)
       payment.failed (0) < payment.succeeded (1) < payment.refunded (2)
       refund.created (0) < refund.updated = a refund a payment.* event lists (1)
         < refund.failed (2)
       dispute.opened (0) < dispute.updated (1) < dispute.closed (2)
       subscription.activated (0) < subscription.updated = trial_will_end (1)
         < subscription.paused = subscription.resumed (2) < subscription.canceled (3)
       customer.created (0) < customer.updated (1) < customer.deleted (2)

4. the Stripe event id (plain string order), the deterministic tie-break.

The subscription and customer precedences, the customer → user rule and the deleted stub
rule are the entitlement worker's too: ``workers.customers`` holds them once.

Merged whatever the order
-------------------------
Some columns do not follow the newest snapshot but combine every event seen, so the
result depends on the set of events only: ``created_at`` is the least of (Stripe's
``created``, else the event's time), which for a payment is its intent's ``created`` once
an intent event came (a charge's event of an intent carries none: the normalizer leaves
it out, since a charge is created per attempt, after its intent and before its event);
``amount_withdrawn`` and ``amount_reinstated`` only grow; ``succeeded_at`` is the
earliest event that said succeeded; a payment's charge id, card details
(``CHARGE_FIELDS``) and ``amount_refunded`` come together from one event
(``charge_mark``): the greatest-marked that carried the charge's details, else the
greatest-marked that named a charge, since a payment intent's own events may carry
neither, its charge changes with each attempt, and Stripe lowers ``amount_refunded`` when
a refund fails. Identifiers that Stripe sets once and never changes (``FILL``: customer,
intent, invoice, numbers) are filled from any event that knows them when the winning one
does not. A customer's user mapping keeps the newest ``customer.*`` event's
``metadata.user_id``, else the newest checkout's ``client_reference_id``; a
``customer.deleted`` erases its email and name for good.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from contracts import (
    CheckoutEvent,
    Customer,
    CustomerEvent,
    Dispute,
    DisputeEvent,
    Invoice,
    InvoiceEvent,
    InvoicePaymentEvent,
    Payment,
    PaymentEvent,
    Refund,
    RefundEvent,
    SubscriptionEvent,
)
from contracts.ledger import (
    LedgerDisputeEventType,
    LedgerInvoiceEventType,
    LedgerPaymentEventType,
    LedgerRefundEventType,
)
from workers.customers import (
    CUSTOMER_EVENT_RANK,
    SUBSCRIPTION_EVENT_RANK,
    checkout_user,
    event_mark,
    newer,
    says_who,
)
from workers.invoice.rows import (
    CustomerRow,
    DisputeRow,
    InvoicePaymentRow,
    InvoiceRow,
    Mark,
    PaymentRow,
    RefundRow,
    SubscriptionRow,
)

# -- ranks ------------------------------------------------------------------------------------

INVOICE_STATUS_RANK: Final[Mapping[str | None, int]] = {
    None: 0,
    "draft": 0,
    "open": 1,
    "uncollectible": 2,
    "paid": 3,
    "void": 4,
}
PAYMENT_STATUS_RANK: Final[Mapping[str, int]] = {
    "requires_payment_method": 0,
    "requires_confirmation": 0,
    "requires_action": 0,
    "requires_capture": 0,
    "processing": 0,
    "pending": 0,
    "failed": 1,
    "canceled": 1,
    "succeeded": 2,
}
REFUND_STATUS_RANK: Final[Mapping[str | None, int]] = {
    None: 0,
    "pending": 0,
    "requires_action": 0,
    "succeeded": 1,
    "failed": 1,
    "canceled": 1,
}
DISPUTE_CLOSED: Final = frozenset({"won", "lost", "warning_closed", "prevented"})
INVOICE_PAYMENT_ENDED: Final = frozenset({"paid", "canceled"})
SUBSCRIPTION_ENDED: Final = frozenset({"canceled", "incomplete_expired"})

EVENT_RANK: Final[Mapping[str, int]] = {
    **SUBSCRIPTION_EVENT_RANK,  # shared with the entitlement worker: workers.customers
    **CUSTOMER_EVENT_RANK,
    "invoice.created": 0,
    "invoice.finalized": 1,
    "invoice.payment_failed": 2,
    "invoice.marked_uncollectible": 3,
    "invoice.paid": 4,
    "invoice.voided": 5,
    "payment.failed": 0,
    "payment.succeeded": 1,
    "payment.refunded": 2,
    "dispute.opened": 0,
    "dispute.updated": 1,
    "dispute.closed": 2,
}
REFUND_EVENT_RANK: Final[Mapping[str, int]] = {
    "refund.created": 0,
    "refund.updated": 1,
    # A refund a charge lists (charge.refunded; any charge event may carry the list).
    "payment.refunded": 1,
    "payment.succeeded": 1,
    "payment.failed": 1,
    "refund.failed": 2,
}

SUCCEEDED: Final = "succeeded"


def invoice_status_rank(status: str | None) -> int:
    return INVOICE_STATUS_RANK.get(status, 0)


def payment_status_rank(status: str) -> int:
    return PAYMENT_STATUS_RANK.get(status, 0)


def refund_status_rank(status: str | None) -> int:
    return REFUND_STATUS_RANK.get(status, 0)


def dispute_status_rank(status: str) -> int:
    return 1 if status in DISPUTE_CLOSED else 0


def subscription_status_rank(status: str) -> int:
    return 1 if status in SUBSCRIPTION_ENDED else 0


def invoice_payment_status_rank(status: str) -> int:
    return 1 if status in INVOICE_PAYMENT_ENDED else 0


def ledger_payment_status(event_type: str, stripe_status: str) -> str:
    """The ledger's status of a payment after ``event_type``: what the event says happened."""
    if event_type == "payment.succeeded":
        return SUCCEEDED
    if event_type == "payment.failed":
        return stripe_status if stripe_status in ("failed", "canceled") else "failed"
    return stripe_status  # payment.refunded: the charge's own (succeeded)


# -- merging ----------------------------------------------------------------------------------

R = TypeVar("R", InvoiceRow, PaymentRow, RefundRow, DisputeRow, SubscriptionRow, InvoicePaymentRow)
A = TypeVar("A", RefundRow, DisputeRow)


def _indexes(row_type: type[Any], names: Sequence[str]) -> tuple[int, ...]:
    fields: tuple[str, ...] = row_type._fields
    return tuple(fields.index(name) for name in names)


INVOICE_FILL: Final = _indexes(
    InvoiceRow,
    ("customer_id", "number", "subscription_id", "payment_intent_id", "charge_id", "paid_at"),
)
PAYMENT_FILL: Final = _indexes(
    PaymentRow, ("customer_id", "payment_intent_id", "invoice_id", "receipt_url")
)
REFUND_FILL: Final = _indexes(
    RefundRow, ("payment_id", "charge_id", "payment_intent_id", "customer_id")
)
DISPUTE_FILL: Final = _indexes(
    DisputeRow, ("payment_id", "charge_id", "payment_intent_id", "customer_id")
)
SUBSCRIPTION_FILL: Final = _indexes(SubscriptionRow, ("canceled_at",))
INVOICE_PAYMENT_FILL: Final = _indexes(InvoicePaymentRow, ("payment_intent_id", "charge_id"))

CHARGE_FIELDS: Final = ("amount_captured", "payment_method_type", "card_brand", "card_last4")
"""What only an event that carried the charge knows (an intent's may not)."""


def _newest(stored: R, new: R, fill: tuple[int, ...]) -> list[Any]:
    """The fields of whichever of the two has the greater mark, ``fill`` fields it lacks
    taken from the other, ``created_at`` the earlier: the same for either order."""
    winner, other = (new, stored) if new.mark > stored.mark else (stored, new)
    values = list(winner)
    for index in fill:
        if values[index] is None:
            values[index] = other[index]
    return values


def merge_invoice(stored: InvoiceRow | None, new: InvoiceRow) -> InvoiceRow:
    if stored is None:
        return new
    merged = InvoiceRow._make(_newest(stored, new, INVOICE_FILL))
    return merged._replace(created_at=min(stored.created_at, new.created_at))


def _charge_rank(row: PaymentRow) -> tuple[bool, Mark] | None:
    """How good ``row``'s charge fields are: carried by an event that had the charge's
    details first, then by the mark; None when no event named a charge."""
    if row.charge_mark is None:
        return None
    return (_has_charge_details(row), row.charge_mark)


def _has_charge_details(row: PaymentRow) -> bool:
    return (
        row.amount_captured is not None
        or row.payment_method_type is not None
        or row.card_brand is not None
        or row.card_last4 is not None
    )


def merge_payment(stored: PaymentRow | None, new: PaymentRow) -> PaymentRow:
    """The newest snapshot (``_newest``), with ``created_at`` the earliest, ``succeeded_at``
    the earliest that said succeeded, and the charge's own fields (``charge_id``,
    ``CHARGE_FIELDS``, ``amount_refunded``) all from one event: the greatest-marked that
    carried the charge's details, else the greatest-marked that named a charge. A payment
    intent's charge changes with each attempt, and a refund that fails lowers
    ``amount_refunded``, so neither may be filled or maxed; an intent's event without its
    charge says ``amount_refunded`` 0 and must not count."""
    if stored is None:
        return new
    merged = PaymentRow._make(_newest(stored, new, PAYMENT_FILL))
    succeeded = [at for at in (stored.succeeded_at, new.succeeded_at) if at is not None]
    merged = merged._replace(
        created_at=min(stored.created_at, new.created_at),
        succeeded_at=min(succeeded) if succeeded else None,
    )
    ranked = [(rank, row) for row in (stored, new) if (rank := _charge_rank(row)) is not None]
    if not ranked:
        return merged  # neither named a charge: the newest snapshot's (0 refunded)
    charge = max(ranked, key=lambda pair: pair[0])[1]
    return merged._replace(
        charge_id=charge.charge_id,
        amount_refunded=charge.amount_refunded,
        amount_captured=charge.amount_captured,
        payment_method_type=charge.payment_method_type,
        card_brand=charge.card_brand,
        card_last4=charge.card_last4,
        charge_mark=charge.charge_mark,
    )


def merge_refund(stored: RefundRow | None, new: RefundRow) -> RefundRow:
    if stored is None:
        return new
    merged = RefundRow._make(_newest(stored, new, REFUND_FILL))
    return merged._replace(created_at=min(stored.created_at, new.created_at))


def merge_dispute(stored: DisputeRow | None, new: DisputeRow) -> DisputeRow:
    if stored is None:
        return new
    merged = DisputeRow._make(_newest(stored, new, DISPUTE_FILL))
    return merged._replace(
        amount_withdrawn=max(stored.amount_withdrawn, new.amount_withdrawn),
        amount_reinstated=max(stored.amount_reinstated, new.amount_reinstated),
        created_at=min(stored.created_at, new.created_at),
    )


def merge_subscription(stored: SubscriptionRow | None, new: SubscriptionRow) -> SubscriptionRow:
    if stored is None:
        return new
    merged = SubscriptionRow._make(_newest(stored, new, SUBSCRIPTION_FILL))
    return merged._replace(created_at=min(stored.created_at, new.created_at))


def merge_invoice_payment(
    stored: InvoicePaymentRow | None, new: InvoicePaymentRow
) -> InvoicePaymentRow:
    if stored is None:
        return new
    return InvoicePaymentRow._make(_newest(stored, new, INVOICE_PAYMENT_FILL))


def linked_invoice(invoice: InvoiceRow, links: Sequence[InvoicePaymentRow]) -> InvoiceRow:
    """``invoice`` naming its payment from its links when it names none itself (basil's
    invoices do not): the first of ``links`` (id order) that names a payment. An invoice
    paid in several payments keeps the one it named first; each payment's ``invoice_id``
    comes from its own link whatever the order."""
    if invoice.payment_intent_id or invoice.charge_id:
        return invoice
    for link in links:
        if link.payment_intent_id or link.charge_id:
            return invoice._replace(
                payment_intent_id=link.payment_intent_id, charge_id=link.charge_id
            )
    return invoice


def attached(row: A, payment: PaymentRow) -> A:
    """A refund or dispute row of ``payment``: its payment id, and its customer when the
    payment knows one."""
    if row.payment_id == payment.payment_id and (
        payment.customer_id is None or row.customer_id == payment.customer_id
    ):
        return row
    return row._replace(
        payment_id=payment.payment_id, customer_id=payment.customer_id or row.customer_id
    )


# -- customers ----------------------------------------------------------------------------------


def merge_customer(stored: CustomerRow, event: CustomerEvent) -> CustomerRow:
    """The newest ``customer.*`` event names the user and the contact; ``{id, deleted}``
    stubs without metadata say nothing about either. Deleted is final: email and name are
    erased, whatever came before or comes after."""
    customer: Customer = event.customer
    deleted = stored.deleted or customer.deleted or event.type == "customer.deleted"
    row = stored._replace(deleted=deleted)
    mark = Mark(0, *event_mark(event))
    if says_who(customer) and newer(mark, stored.mark):
        row = row._replace(
            metadata_user_id=customer.user_id or None,
            email=customer.email,
            name=customer.name,
            mark=mark,
        )
    if deleted:
        row = row._replace(email=None, name=None)
    return row


def merge_checkout_user(stored: CustomerRow, event: CheckoutEvent) -> CustomerRow:
    """The newest checkout that names a ``client_reference_id``
    (``workers.customers.checkout_user``): the user when the customer's metadata names
    none."""
    mapped = checkout_user(event)
    mark = Mark(0, *event_mark(event))
    if mapped is None or not newer(mark, stored.checkout_mark):
        return stored
    return stored._replace(checkout_user_id=mapped[1], checkout_mark=mark)


# -- an event's rows ------------------------------------------------------------------------------


def _account(account: str | None) -> str:
    return account or ""


def invoice_row(event: InvoiceEvent) -> InvoiceRow:
    invoice: Invoice = event.invoice
    source = event.source
    return InvoiceRow(
        invoice_id=invoice.id,
        customer_id=event.customer_id,
        account=_account(source.account),
        livemode=source.livemode,
        number=invoice.number,
        status=invoice.status,
        currency=invoice.currency,
        subtotal=invoice.subtotal,
        discount=invoice.discount,
        tax=invoice.tax,
        total=invoice.total,
        amount_due=invoice.amount_due,
        amount_paid=invoice.amount_paid,
        amount_remaining=invoice.amount_remaining,
        billing_reason=invoice.billing_reason,
        subscription_id=invoice.subscription_id,
        payment_intent_id=invoice.payment_intent_id,
        charge_id=invoice.charge_id,
        attempt_count=invoice.attempt_count,
        next_payment_attempt=invoice.next_payment_attempt,
        due_date=invoice.due_date,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        paid_at=invoice.paid_at,
        hosted_invoice_url=invoice.hosted_invoice_url,
        invoice_pdf=invoice.invoice_pdf,
        customer_email=invoice.customer_email,
        lines=[line.model_dump(mode="json") for line in invoice.lines],
        created_at=invoice.created_at or event.occurred_at,
        mark=Mark(
            invoice_status_rank(invoice.status),
            event.occurred_at,
            EVENT_RANK[event.type],
            source.stripe_event_id,
        ),
    )


def carries_charge(payment: Payment) -> bool:
    """Whether the event carried the charge's details (a payment intent's may not)."""
    return (
        payment.amount_captured is not None
        or payment.payment_method_type is not None
        or payment.card_brand is not None
        or payment.card_last4 is not None
    )


def payment_row(event: PaymentEvent) -> PaymentRow:
    payment = event.payment
    source = event.source
    status = ledger_payment_status(event.type, payment.status)
    mark = Mark(
        payment_status_rank(status),
        event.occurred_at,
        EVENT_RANK[event.type],
        source.stripe_event_id,
    )
    return PaymentRow(
        payment_id=payment.id,
        customer_id=event.customer_id,
        account=_account(source.account),
        livemode=source.livemode,
        payment_intent_id=payment.payment_intent_id,
        charge_id=payment.charge_id,
        invoice_id=payment.invoice_id,
        status=status,
        amount=payment.amount,
        amount_captured=payment.amount_captured,
        amount_refunded=payment.amount_refunded,
        currency=payment.currency,
        failure_code=payment.failure_code,
        failure_message=payment.failure_message,
        payment_method_type=payment.payment_method_type,
        card_brand=payment.card_brand,
        card_last4=payment.card_last4,
        receipt_url=payment.receipt_url,
        description=payment.description,
        created_at=payment.created_at or event.occurred_at,
        succeeded_at=event.occurred_at if status == SUCCEEDED else None,
        mark=mark,
        charge_mark=mark if carries_charge(payment) or payment.charge_id else None,
    )


def receipt_paid_at(event: PaymentEvent, row: PaymentRow) -> datetime:
    """When the payment succeeded, as ``event`` (which made ``row`` succeeded) reports it:
    the succeeded charge's creation when the event carries that charge, else the event's
    time. Every event that carries the charge gives the same, whichever came first."""
    if ledger_payment_status(event.type, event.payment.status) != SUCCEEDED:
        # Not this event's news (a replay of an older one): the first succeeded event's.
        return row.succeeded_at or event.occurred_at
    return event.payment.charge_created_at or event.occurred_at


def refund_row(
    refund: Refund,
    event: PaymentEvent | RefundEvent,
    *,
    payment: Payment | None = None,
) -> RefundRow:
    """The row of ``refund`` as ``event`` reports it: a ``refund.*`` event, or a
    ``payment.refunded`` listing it (``payment``: the charge it refunds)."""
    source = event.source
    return RefundRow(
        refund_id=refund.id,
        payment_id=payment.id if payment is not None else None,
        charge_id=refund.charge_id or (payment.charge_id if payment is not None else None),
        payment_intent_id=refund.payment_intent_id
        or (payment.payment_intent_id if payment is not None else None),
        customer_id=event.customer_id,
        account=_account(source.account),
        amount=refund.amount,
        currency=refund.currency,
        status=refund.status,
        reason=refund.reason,
        created_at=refund.created_at or event.occurred_at,
        mark=Mark(
            refund_status_rank(refund.status),
            event.occurred_at,
            REFUND_EVENT_RANK[event.type],
            source.stripe_event_id,
        ),
    )


def dispute_row(event: DisputeEvent) -> DisputeRow:
    dispute: Dispute = event.dispute
    source = event.source
    return DisputeRow(
        dispute_id=dispute.id,
        payment_id=None,
        charge_id=dispute.charge_id,
        payment_intent_id=dispute.payment_intent_id,
        customer_id=event.customer_id,
        account=_account(source.account),
        amount=dispute.amount,
        currency=dispute.currency,
        reason=dispute.reason,
        status=dispute.status,
        amount_withdrawn=dispute.amount_withdrawn,
        amount_reinstated=dispute.amount_reinstated,
        evidence_due_by=dispute.evidence_due_by,
        created_at=dispute.created_at or event.occurred_at,
        mark=Mark(
            dispute_status_rank(dispute.status),
            event.occurred_at,
            EVENT_RANK[event.type],
            source.stripe_event_id,
        ),
    )


def invoice_payment_row(event: InvoicePaymentEvent) -> InvoicePaymentRow:
    link = event.invoice_payment
    source = event.source
    return InvoicePaymentRow(
        invoice_payment_id=link.id,
        invoice_id=link.invoice_id,
        payment_intent_id=link.payment_intent_id,
        charge_id=link.charge_id,
        account=_account(source.account),
        amount_paid=link.amount_paid,
        currency=link.currency,
        status=link.status,
        mark=Mark(
            invoice_payment_status_rank(link.status),
            event.occurred_at,
            0,
            source.stripe_event_id,
        ),
    )


def subscription_row(event: SubscriptionEvent) -> SubscriptionRow:
    sub = event.subscription
    source = event.source
    items = [
        {"price_id": item.price_id, "product_id": item.product_id, "quantity": item.quantity}
        for item in sub.items
    ]
    first = sub.items[0]
    cancellation = sub.cancellation
    return SubscriptionRow(
        subscription_id=sub.id,
        customer_id=event.customer_id,
        account=_account(source.account),
        livemode=source.livemode,
        status=sub.status,
        items=items,
        price_id=first.price_id,
        product_id=first.product_id,
        quantity=first.quantity,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=cancellation.effective_at
        if cancellation is not None and cancellation.mode == "at_period_end"
        else None,
        canceled_at=sub.canceled_at,
        trial_start=sub.trial_start,
        trial_end=sub.trial_end,
        created_at=sub.created_at or event.occurred_at,
        mark=Mark(
            subscription_status_rank(sub.status),
            event.occurred_at,
            EVENT_RANK[event.type],
            source.stripe_event_id,
        ),
    )


# -- how a change is typed ----------------------------------------------------------------------

_INVOICE_STATUS_TYPES: Final[Mapping[str | None, LedgerInvoiceEventType]] = {
    "open": "invoice.finalized",
    "paid": "invoice.paid",
    "void": "invoice.voided",
    "uncollectible": "invoice.marked_uncollectible",
}


def invoice_change(
    old: InvoiceRow | None, new: InvoiceRow, cause_type: str, won: bool
) -> LedgerInvoiceEventType:
    """A failed payment attempt that left the invoice open is ``invoice.payment_failed``;
    otherwise a new status names the change (a row first seen as a draft is
    ``invoice.created``), and anything else is ``invoice.updated``."""
    if won and cause_type == "invoice.payment_failed" and new.status == "open":
        return "invoice.payment_failed"
    if old is None:
        return _INVOICE_STATUS_TYPES.get(new.status, "invoice.created")
    if old.status != new.status:
        return _INVOICE_STATUS_TYPES.get(new.status, "invoice.updated")
    return "invoice.updated"


def payment_changes(old: PaymentRow | None, new: PaymentRow) -> list[LedgerPaymentEventType]:
    """``payment.succeeded`` or ``payment.failed`` when the status became one,
    ``payment.refunded`` when more was refunded (both, for a payment first seen refunded),
    else ``payment.updated``."""
    types: list[LedgerPaymentEventType] = []
    if old is None or old.status != new.status:
        if new.status == SUCCEEDED:
            types.append("payment.succeeded")
        elif new.status in ("failed", "canceled"):
            types.append("payment.failed")
    if new.amount_refunded > (old.amount_refunded if old is not None else 0):
        types.append("payment.refunded")
    return types or ["payment.updated"]


def refund_change(old: RefundRow | None) -> LedgerRefundEventType:
    return "refund.created" if old is None else "refund.updated"


def dispute_change(old: DisputeRow | None, new: DisputeRow) -> LedgerDisputeEventType:
    closed = new.mark.status_rank > 0
    if closed and (old is None or old.mark.status_rank == 0):
        return "dispute.closed"
    return "dispute.opened" if old is None else "dispute.updated"
