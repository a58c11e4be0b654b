"""``billing-fleet send-test-event``: POST one signed ``customer.subscription.created``.

The signature is Stripe's v1 scheme, computed here rather than by the SDK so the command
also documents it: ``t=<unix ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<raw body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000/webhooks/stripe"
API_VERSION = "2025-11-17.clover"


def build_event(now: int | None = None, customer_id: str | None = None) -> dict[str, Any]:
    """A small, valid Stripe event; fresh ids each call so it is never a duplicate."""
    created = int(time.time()) if now is None else now
    suffix = secrets.token_hex(8)
    customer = customer_id or f"cus_test{suffix}"
    subscription_id = f"sub_test{suffix}"
    period_end = created + 30 * 24 * 3600
    price = {
        "id": "price_test_pro_monthly",
        "object": "price",
        "active": True,
        "currency": "usd",
        "livemode": False,
        "lookup_key": "pro_monthly",
        "metadata": {},
        "product": "prod_test_pro",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "type": "recurring",
        "unit_amount": 2000,
    }
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "billing_cycle_anchor": created,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_test{suffix}",
                    "object": "subscription_item",
                    "created": created,
                    "current_period_start": created,
                    "current_period_end": period_end,
                    "metadata": {},
                    "price": price,
                    "quantity": 1,
                    "subscription": subscription_id,
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": f"in_test{suffix}",
        "livemode": False,
        "metadata": {"source": "billing-fleet send-test-event"},
        "pause_collection": None,
        "start_date": created,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }
    return {
        "id": f"evt_test{suffix}",
        "object": "event",
        "account": None,
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": subscription},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.subscription.created",
    }


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def send(url: str, secret: str, *, timeout: float = 10.0) -> tuple[int, str]:
    """POST a fresh signed event to ``url``; returns the status code and response body."""
    try:
        import httpx
    except ImportError as exc:
        raise RuntimeError(
            "send-test-event needs httpx: pip install 'billing-fleet[test]' (or httpx)"
        ) from exc
    payload = json.dumps(build_event(), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": signature_header(payload, secret, int(time.time())),
    }
    response = httpx.post(url, content=payload, headers=headers, timeout=timeout)
    return response.status_code, response.text
