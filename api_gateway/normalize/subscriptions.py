"""``customer.subscription.*`` → ``Subscription``."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from api_gateway.normalize.errors import refused
from api_gateway.normalize.fields import Reader
from api_gateway.normalize.prices import price_of, required_price_id
from contracts import Cancellation, PauseCollection, Subscription, SubscriptionItem


def _items(sub: Reader) -> list[SubscriptionItem]:
    # Until 2025-03-31.basil every item shared the subscription's period; since then the
    # period lives on each item. Fill the older shape in so consumers read one place.
    sub_start = sub.opt_time("current_period_start")
    sub_end = sub.opt_time("current_period_end")
    raw_items = sub.list_of("items")
    if not raw_items and sub.has("plan"):
        # 2014/2015 subscriptions have one plan and a quantity at the top level, no items.
        price = price_of(sub)
        return [
            SubscriptionItem(
                id=None,
                price_id=required_price_id(sub, price),
                product_id=price.product_id,
                lookup_key=price.lookup_key,
                product_metadata=price.product_metadata,
                quantity=sub.int_or("quantity", 1),
                current_period_start=sub_start,
                current_period_end=sub_end,
            )
        ]
    return [_item(item, sub_start, sub_end) for item in raw_items]


def _item(item: Reader, sub_start: datetime | None, sub_end: datetime | None) -> SubscriptionItem:
    price = price_of(item)
    start = item.opt_time("current_period_start")
    end = item.opt_time("current_period_end")
    try:
        return SubscriptionItem(
            id=item.opt_str("id"),
            price_id=required_price_id(item, price),
            product_id=price.product_id,
            lookup_key=price.lookup_key,
            product_metadata=price.product_metadata,
            # Stripe omits quantity for metered prices; the customer holds one unit.
            quantity=item.int_or("quantity", 1),
            current_period_start=start or sub_start,
            current_period_end=end or sub_end,
        )
    except ValidationError as exc:
        raise refused(exc, item.path) from exc


def _period(sub: Reader, items: list[SubscriptionItem]) -> tuple[datetime | None, datetime | None]:
    start = sub.opt_time("current_period_start")
    end = sub.opt_time("current_period_end")
    if start is not None or end is not None or not items:
        return start, end
    # basil+: the subscription renews when its first item does, so take the item whose
    # period ends first (the first item on ties or when none has an end).
    ends = [(item.current_period_end, n) for n, item in enumerate(items) if item.current_period_end]
    first = items[min(ends)[1]] if ends else items[0]
    return first.current_period_start, first.current_period_end


def _cancellation(
    sub: Reader, stripe_type: str, period_end: datetime | None
) -> Cancellation | None:
    details = sub.child("cancellation_details")
    reason = details.opt_str("reason") if details is not None else None
    ended_at = sub.opt_time("ended_at")
    if (
        stripe_type == "customer.subscription.deleted"
        or sub.get("status") == "canceled"
        or ended_at is not None
    ):
        return Cancellation(
            mode="immediately",
            effective_at=ended_at or sub.opt_time("canceled_at"),
            reason=reason,
        )
    cancel_at = sub.opt_time("cancel_at")
    if sub.flag("cancel_at_period_end") or cancel_at is not None:
        return Cancellation(
            mode="at_period_end", effective_at=cancel_at or period_end, reason=reason
        )
    return None


def _pause(sub: Reader) -> PauseCollection | None:
    pause = sub.child("pause_collection")
    if pause is None:
        return None
    return PauseCollection(
        behavior=pause.req_str("behavior"), resumes_at=pause.opt_time("resumes_at")
    )


def subscription(sub: Reader, stripe_type: str, previous: Reader | None) -> Subscription:
    items = _items(sub)
    start, end = _period(sub, items)
    return Subscription(
        id=sub.req_str("id"),
        status=sub.req_str("status"),
        items=items,
        current_period_start=start,
        current_period_end=end,
        cancel_at_period_end=sub.flag("cancel_at_period_end"),
        cancellation=_cancellation(sub, stripe_type, end),
        trial_start=sub.opt_time("trial_start"),
        trial_end=sub.opt_time("trial_end"),
        pause_collection=_pause(sub),
        metadata=sub.metadata(),
        changed_fields=sorted(previous.keys()) if previous is not None else [],
        # (Old versions' ``start`` is not the creation time: a plan change moved it.)
        created_at=sub.opt_time("created"),
        canceled_at=sub.opt_time("canceled_at"),
    )
