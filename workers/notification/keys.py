"""The deliveries' idempotency keys: what makes each mail and webhook exactly once.

A key is unique per (worker, channel) in ``deliveries``: the row a redelivered or replayed
event builds again is not inserted a second time. Keys name a recipient by its customer id
(or a digest of an address without a customer), never by the address itself: the key stays
in the delivery log after the retention job masked the row's address and body.
"""

from __future__ import annotations

import hashlib

from workers.runtime.deliveries.model import MAX_KEY_CHARS


def bounded_key(key: str, prefix: str) -> str:
    """``key``, or ``<prefix>:sha256:<hex of key>`` when it is longer than a key may be
    (ids are Stripe's, up to 255 characters each): still one key per input."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    return f"{prefix}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def address_digest(address: str) -> str:
    """A stable name for an address without its customer: case-folded, hashed."""
    return "email-" + hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]


def notice_key(kind: str, event_id: str, recipient: str) -> str:
    """``<notice>:<event id>:<recipient>``."""
    return bounded_key(f"{kind}:{event_id}:{recipient}", kind)


def webhook_key(endpoint_id: str, event_id: str) -> str:
    """``webhook:<endpoint id>:<event id>``; the signed sender sends it as ``webhook-id``."""
    return bounded_key(f"webhook:{endpoint_id}:{event_id}", "webhook")
