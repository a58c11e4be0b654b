"""Outbound webhook endpoints, from a YAML file (``BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH``)::

    endpoints:
      - id: accounting                      # stable name: state, CLI, webhook-id prefix
        url: https://accounting.internal/hooks/billing
        secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]   # two during a rotation
        events: ["invoice.*", payment.refunded]            # types or globs; none = all
      - id: crm
        url: https://crm.internal/billing
        secrets: [whsec_...]
        enabled: false                      # receives nothing new

The file is validated at startup (``EndpointsError`` naming the file and the field, never
a secret's value) and read again when it changes (``EndpointsFile``), so a secret rotated
in it signs the messages already queued too.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

SECRET_PREFIX: Final = "whsec_"
MIN_SECRET_BYTES: Final = 24
"""The Standard Webhooks spec's shortest secret (24 to 64 random bytes)."""
RELOAD_CHECK_SECONDS: Final = 1.0
"""Least time between two looks at the file's modification time."""
_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class EndpointsError(ValueError):
    """The endpoints file is missing, not YAML, or not a valid list of endpoints."""


def secret_bytes(secret: str) -> bytes:
    """The key a ``whsec_`` secret stands for; ValueError (without the value) if none."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a secret must start with {SECRET_PREFIX}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Strict: standardwebhooks' own decoder skips characters outside the alphabet,
        # which would sign with a key other than the one the receiver was given.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a secret must be {SECRET_PREFIX} followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a secret must decode to at least {MIN_SECRET_BYTES} bytes")
    return key


def _listed(value: object) -> object:
    """One secret given as a string is a list of one."""
    return [value] if isinstance(value, str) else value


class Endpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Stable name: lowercase letters, digits, '_', '.', '-'.")
    url: str
    secrets: Annotated[list[SecretStr], BeforeValidator(_listed)] = Field(min_length=1)
    events: list[str] = Field(default_factory=list)
    """CloudEvent types or shell-style globs (``invoice.*``); empty: every type."""
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                "must be 1 to 63 lowercase letters, digits, '_', '.' or '-' (first a letter "
                "or digit)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # The signature authenticates us; credentials in a URL end up in listings.
            raise ValueError("must not hold credentials (user:password@)")
        if parts.fragment:
            raise ValueError("must not have a #fragment")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            secret_bytes(secret.get_secret_value())
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or any(c.isspace() for c in pattern):
                raise ValueError("an event type or glob is not empty and has no spaces")
        return value

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint receives events of ``event_type`` (its filter only)."""
        return not self.events or any(fnmatch.fnmatchcase(event_type, p) for p in self.events)

    def secret_values(self) -> tuple[str, ...]:
        return tuple(secret.get_secret_value() for secret in self.secrets)


class WebhookEndpoints(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoints: list[Endpoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> WebhookEndpoints:
        seen: set[str] = set()
        for endpoint in self.endpoints:
            if endpoint.id in seen:
                raise ValueError(f"endpoint id {endpoint.id!r} is used twice")
            seen.add(endpoint.id)
        return self

    def get(self, endpoint_id: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.id == endpoint_id), None)

    def endpoints_for(self, event_type: str) -> list[Endpoint]:
        """The enabled endpoints whose filter takes ``event_type``, in file order."""
        return [e for e in self.endpoints if e.enabled and e.wants(event_type)]


def parse_endpoints(data: Any, *, origin: str) -> WebhookEndpoints:
    """``data`` (the YAML's value) as endpoints; ``EndpointsError`` naming each field
    that is wrong, never its value (a secret's)."""
    if data is None:
        return WebhookEndpoints()
    try:
        return WebhookEndpoints.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise EndpointsError(f"{origin}: invalid webhook endpoints: {problems}") from None


def load_endpoints(path: Path) -> WebhookEndpoints:
    try:
        text = path.read_text()
    except OSError as exc:
        raise EndpointsError(
            f"{path}: webhook endpoints file not readable: {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EndpointsError(f"{path}: webhook endpoints file is not valid YAML: {exc}") from None
    return parse_endpoints(data, origin=str(path))


class EndpointsFile:
    """The endpoints of ``path`` (none when ``path`` is None), loaded now (a broken file
    is ``EndpointsError``: the worker does not start) and again when the file changes,
    checked at most once a second; a change that breaks it is logged and the endpoints
    read before are kept."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp = self._stat()
        self._endpoints = load_endpoints(path) if path is not None else WebhookEndpoints()
        self._checked_at = time.monotonic()

    def current(self) -> WebhookEndpoints:
        now = time.monotonic()
        if self.path is None or now - self._checked_at < RELOAD_CHECK_SECONDS:
            return self._endpoints
        self._checked_at = now
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._endpoints = load_endpoints(self.path)
                log.info("webhook endpoints reloaded", extra={"path": str(self.path)})
            except EndpointsError as exc:
                log.error(
                    "webhook endpoints file broken: the endpoints read before are kept",
                    extra={"error": str(exc)},
                )
        return self._endpoints

    def endpoints_for(self, event_type: str) -> list[Endpoint]:
        """The enabled endpoints whose filter takes ``event_type`` (what a handler writes
        a delivery for)."""
        return self.current().endpoints_for(event_type)

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self.current().get(endpoint_id)

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)
