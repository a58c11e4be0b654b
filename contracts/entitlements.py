"""Entitlement changes published on ``entitlements.changes.v1`` (key = Stripe customer id).

One event per (customer, feature) whose effective entitlement changed: granted (now
usable), updated (limit or expiry changed), revoked (no longer usable). ``id`` is stable
for the change a given cause produced, so a relay's redelivery carries the same id.
Text never holds NUL; ``limit`` is non-negative and within PostgreSQL's bigint (the
worker saturates a larger sum or product at ``BIGINT_MAX``).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, Field, TypeAdapter
from pydantic_core import to_json

from contracts.events import BIGINT_MAX, EVENT_ID_NAMESPACE, Model, Text

_NAMESPACE: Final = EVENT_ID_NAMESPACE.bytes

Limit = Annotated[int, Field(ge=0, le=BIGINT_MAX)]

EntitlementChangeType = Literal["entitlement.granted", "entitlement.updated", "entitlement.revoked"]


def change_id_for(cause: str, customer_id: str, feature: str) -> uuid.UUID:
    """Stable id of the change ``cause`` (a Stripe event id, or an expiry) made to a feature:
    ``uuid5(EVENT_ID_NAMESPACE, "entitlement:<cause>:<customer_id>:<feature>")``."""
    return uuid.UUID(change_id_text(cause, customer_id, feature))


def change_id_text(cause: str, customer_id: str, feature: str) -> str:
    """``str(change_id_for(...))``, spelled out: uuid.uuid5 and uuid.UUID cost more than
    the SHA-1 itself, and the worker makes one id per change, thousands per batch."""
    name = f"entitlement:{cause}:{customer_id}:{feature}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class EntitlementChange(Model):
    id: uuid.UUID
    type: EntitlementChangeType
    occurred_at: AwareDatetime = Field(description="When the cause happened (Stripe event time).")
    customer_id: Text
    user_id: Text | None = Field(description="The application's user, when known.")
    feature: Text
    entitled: bool
    limit: Limit | None = Field(
        description="Numeric limit (at most BIGINT_MAX: larger ones saturate); None for a "
        "boolean feature."
    )
    expires_at: AwareDatetime | None = Field(description="When access ends unless renewed.")
    sources: list[Text] = Field(description="What grants it: subscription/payment ids, 'stripe'.")
    caused_by: Text | None = Field(
        description="Stripe event id of the cause; None when access expired with time."
    )


entitlement_change_adapter: TypeAdapter[EntitlementChange] = TypeAdapter(EntitlementChange)


def parse_entitlement_change(data: bytes | str) -> EntitlementChange:
    return entitlement_change_adapter.validate_json(data)


def entitlement_change_json(
    *,
    id: uuid.UUID | str,
    type: EntitlementChangeType,
    occurred_at: datetime,
    customer_id: str,
    user_id: str | None,
    feature: str,
    entitled: bool,
    limit: int | None,
    expires_at: datetime | None,
    sources: list[str],
    caused_by: str | None,
) -> bytes:
    """``EntitlementChange(...).model_dump_json()`` for values the caller already typed,
    without validating them again: the worker emits thousands per batch, and validation
    was half of each one's cost. Same bytes (a test compares both). ``id`` may be given
    as its text (``change_id_text``)."""
    return to_json(
        {
            "id": id,
            "type": type,
            "occurred_at": occurred_at,
            "customer_id": customer_id,
            "user_id": user_id,
            "feature": feature,
            "entitled": entitled,
            "limit": limit,
            "expires_at": expires_at,
            "sources": sources,
            "caused_by": caused_by,
        }
    )
