"""Standard Webhooks signatures, made by the ``standardwebhooks`` package.

Each secret signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256; during a
rotation every secret's ``v1,<base64>`` goes out, space-separated, so a receiver that
knows either one verifies the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Final

from standardwebhooks import Webhook

from workers.notification.webhooks.endpoints import secret_bytes

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"


@lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    # Decoded once per secret (strictly: the endpoints file was checked the same way).
    return Webhook(secret_bytes(secret))


def signature(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` value: one ``v1,<sig>`` per secret, space-separated.
    ``timestamp`` must be UTC (the package reads it as such)."""
    return " ".join(_signer(s).sign(msg_id=msg_id, timestamp=timestamp, data=body) for s in secrets)


def signed_headers(
    secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(timestamp.timestamp())),
        SIGNATURE_HEADER: signature(secrets, msg_id, timestamp, body),
    }
