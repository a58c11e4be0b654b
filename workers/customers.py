"""The rules every worker that maps a Stripe customer to an application user shares (the
entitlement and invoice workers, the notification worker next). Pure: contracts only.

- **The user.** ``customer.metadata.user_id`` of the newest ``customer.*`` event that says
  who the customer is, else the ``client_reference_id`` of the newest checkout of the
  customer that names one: metadata wins (``user_of``).
- **Stubs.** A ``customer.deleted`` may render only ``{id, deleted}``: without metadata it
  says nothing about the user (or the contact), so it moves no mark (``says_who``).
- **The marks.** "Newest" compares (``occurred_at``, the type's precedence within a second,
  the Stripe event id) as tuples (``event_mark``, ``newer``), the precedences below; a
  checkout ranks 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, Literal, TypeVar

from contracts import CheckoutEvent, Customer, CustomerEvent, SubscriptionEvent

SUBSCRIPTION_EVENT_RANK: Final[Mapping[str, int]] = {
    "subscription.activated": 0,
    "subscription.updated": 1,
    "subscription.trial_will_end": 1,
    "subscription.paused": 2,
    "subscription.resumed": 2,
    "subscription.canceled": 3,
}
"""Precedence of a subscription's events within one second: created < updated < paused,
resumed < canceled, so a same-second redelivery of an older snapshot never wins."""
CUSTOMER_EVENT_RANK: Final[Mapping[str, int]] = {
    "customer.created": 0,
    "customer.updated": 1,
    "customer.deleted": 2,
}
"""Precedence of a customer's events within one second."""
CHECKOUT_RANK: Final = 0

UserSource = Literal["metadata", "checkout"]
EventMark = tuple[datetime, int, str]
"""(``occurred_at``, precedence, Stripe event id): a workers' ``Mark`` holds these last."""
M = TypeVar("M", bound=tuple[object, ...])


def event_mark(event: CustomerEvent | CheckoutEvent | SubscriptionEvent) -> EventMark:
    """Where ``event`` stands in its object's history."""
    if isinstance(event, CheckoutEvent):
        rank = CHECKOUT_RANK
    elif isinstance(event, CustomerEvent):
        rank = CUSTOMER_EVENT_RANK[event.type]
    else:
        rank = SUBSCRIPTION_EVENT_RANK[event.type]
    return (event.occurred_at, rank, event.source.stripe_event_id)


def newer(mark: M, than: M | None) -> bool:
    """Whether an event at ``mark`` replaces what the one at ``than`` said (nothing yet:
    it does); the same event again does not."""
    return than is None or mark > than


def says_who(customer: Customer) -> bool:
    """False for the ``{id, deleted}`` stub a ``customer.deleted`` may carry: it names no
    user and no contact, so it changes neither."""
    return not (customer.deleted and not customer.metadata)


def checkout_user(event: CheckoutEvent) -> tuple[str, str] | None:
    """(customer, user) a checkout maps: its ``client_reference_id``; None for a guest
    checkout (no customer to map) or one naming none."""
    user = event.checkout.client_reference_id
    if not event.customer_id or not user:
        return None
    return event.customer_id, user


def user_of(
    metadata_user_id: str | None, checkout_user_id: str | None
) -> tuple[str | None, UserSource | None]:
    """(the application user, where it came from): metadata wins over checkout."""
    if metadata_user_id:
        return metadata_user_id, "metadata"
    if checkout_user_id:
        return checkout_user_id, "checkout"
    return None, None
