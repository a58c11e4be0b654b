"""``billing-fleet send-test-event``: POST a signed ``customer.created`` naming a user,
then a signed ``customer.subscription.created`` on the catalog's ``pro_monthly`` price.

The entitlement worker maps a customer to an application user from the customer's
``metadata.user_id`` (``customer.*`` events; a subscription's metadata does not count),
hence the first event: after both, the user's entitlements are readable. The customer and
user default to fixed ids, the ones ``billing-fleet dev`` prints its read API tokens for.

The signature is Stripe's v1 scheme, computed here rather than by the SDK so the command
also documents it: ``t=<unix ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<raw body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # not at run time: `worker` loads nothing of the gateway
    from api_gateway.settings import GatewaySettings


API_VERSION = "2025-11-17.clover"
DEFAULT_CUSTOMER_ID = "cus_dev_test"
DEFAULT_USER_ID = "user_dev_test"


@dataclass(frozen=True)
class Sent:
    stripe_type: str
    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _event(stripe_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": f"evt_test{secrets.token_hex(8)}",  # fresh: never a duplicate
        "object": "event",
        "account": None,
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": stripe_type,
    }


def build_customer_event(customer_id: str, user_id: str, now: int | None = None) -> dict[str, Any]:
    """``customer.created`` with ``metadata.user_id``: what maps the customer to the user."""
    created = int(time.time()) if now is None else now
    customer = {
        "id": customer_id,
        "object": "customer",
        "created": created,
        "email": None,
        "livemode": False,
        "metadata": {"user_id": user_id, "source": "billing-fleet send-test-event"},
        "name": None,
    }
    return _event("customer.created", customer, created)


def build_event(
    now: int | None = None,
    customer_id: str = DEFAULT_CUSTOMER_ID,
    user_id: str = DEFAULT_USER_ID,
) -> dict[str, Any]:
    """A small, valid ``customer.subscription.created``; a fresh subscription each call."""
    created = int(time.time()) if now is None else now
    suffix = secrets.token_hex(8)
    customer = customer_id
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
        "metadata": {"user_id": user_id, "source": "billing-fleet send-test-event"},
        "pause_collection": None,
        "start_date": created,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }
    return _event("customer.subscription.created", subscription, created)


def gateway_url(settings: GatewaySettings, port: int | None = None) -> str:
    """``http://host:port`` of the configured gateway, as a client on this machine reaches it."""
    host = settings.gateway_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port or settings.gateway_port}"


def webhook_url(settings: GatewaySettings) -> str:
    return f"{gateway_url(settings)}/webhooks/stripe"


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def send(
    url: str,
    secret: str,
    *,
    customer_id: str = DEFAULT_CUSTOMER_ID,
    user_id: str = DEFAULT_USER_ID,
    timeout: float = 10.0,
) -> list[Sent]:
    """POST the customer event, then (if it was accepted) the subscription event.

    Raises ``httpx.TransportError`` when nothing answers at ``url``.
    """
    import httpx

    events = [
        build_customer_event(customer_id, user_id),
        build_event(customer_id=customer_id, user_id=user_id),
    ]
    sent: list[Sent] = []
    with httpx.Client(timeout=timeout) as client:
        for event in events:
            payload = json.dumps(event, separators=(",", ":")).encode()
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": signature_header(payload, secret, int(time.time())),
            }
            response = client.post(url, content=payload, headers=headers)
            sent.append(Sent(event["type"], response.status_code, response.text))
            if not sent[-1].ok:
                break
    return sent
