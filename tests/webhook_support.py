"""Helpers of the signed webhook tests: secrets, endpoints files, and an independent
Standard Webhooks verifier (HMAC-SHA256 by hand, not the package the sender uses)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def endpoint(
    endpoint_id: str,
    url: str,
    secrets: Sequence[str],
    events: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": endpoint_id,
        "url": url,
        "secrets": list(secrets),
        "events": list(events),
        **extra,
    }


def write_endpoints(path: Path, endpoints: Sequence[dict[str, Any]]) -> Path:
    """Write the file as an operator would, replacing it (a new inode: a reload sees it
    even within the file system's timestamp resolution)."""
    staging = path.with_suffix(".tmp")
    staging.write_text(yaml.safe_dump({"endpoints": list(endpoints)}))
    staging.replace(path)
    return path


def spec_signatures(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,<sig>`` the spec defines for ``secret``: HMAC-SHA256 over
    ``{id}.{timestamp}.{body}`` with the base64-decoded part after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether any ``v1`` signature of ``headers`` is ``secret``'s (constant-time compare)."""
    expected = spec_signatures(
        secret, headers["webhook-id"], headers["webhook-timestamp"], body
    ).encode()
    return any(
        hmac.compare_digest(expected, sent.encode())
        for sent in headers["webhook-signature"].split(" ")
    )
