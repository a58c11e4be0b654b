"""Real Stripe event payloads and sample objects (tests/fixtures/stripe, provenance in its
README); a signer."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import stripe

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stripe"
PRIMARY_SECRET = "whsec_test_primary"
SECONDARY_SECRET = "whsec_test_secondary"


def fixture_files() -> list[Path]:
    files = sorted(FIXTURES.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no Stripe fixtures under {FIXTURES}")
    return files


def load_event(name: str, *, fresh_id: bool = True) -> dict[str, Any]:
    """A fixture event; with ``fresh_id`` a unique Stripe event id, so tests never collide."""
    event: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    if fresh_id:
        event["id"] = f"evt_test_{uuid.uuid4().hex}"
    return event


def load_object(name: str) -> dict[str, Any]:
    """One of Stripe's sample API objects (``objects/``, e.g. ``refund.json``): not an event."""
    data: dict[str, Any] = json.loads((FIXTURES / "objects" / name).read_text())
    return data


def sign(payload: bytes, secret: str = PRIMARY_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value, made by stripe-python's own helper."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )
    return header


def signed(event: dict[str, Any], **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": sign(body, **kwargs), "Content-Type": "application/json"}
