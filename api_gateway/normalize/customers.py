"""``customer.*`` → ``Customer``."""

from __future__ import annotations

from api_gateway.normalize.fields import Reader
from contracts import Customer


def customer(obj: Reader, stripe_type: str) -> Customer:
    metadata = obj.metadata()
    return Customer(
        id=obj.req_str("id"),
        email=obj.opt_str("email"),
        name=obj.opt_str("name"),
        user_id=metadata.get("user_id") or None,
        metadata=metadata,
        # customer.deleted renders either the last full customer or the {id, deleted} stub.
        deleted=obj.flag("deleted") or stripe_type == "customer.deleted",
    )
