"""The gateway's settings: the webhook ingress, its HTTP server, the read API's JWTs."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from billing_fleet.http_server import ServerLimits
from billing_fleet.settings import CoreSettings, split_commas

MIN_JWT_HS256_SECRET_BYTES: Final = 32
"""RFC 7518 §3.2: an HS256 key at least as long as the hash output."""

_LIMITS: Final = ServerLimits()


class GatewaySettings(CoreSettings):
    # -- Stripe webhook ingress ----------------------------------------------------------------
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated webhook signing secrets; any may match (secret rolling).",
    )
    stripe_webhook_tolerance_seconds: int = Field(
        default=300, ge=1, description="Maximum age of a Stripe-Signature timestamp."
    )
    stripe_api_version: str = Field(
        default="2025-11-17.clover",
        description="API version pinned on the webhook endpoint; others are counted.",
    )
    webhook_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Larger request bodies (on any route) are refused with 413.",
    )

    # -- HTTP ----------------------------------------------------------------------------------
    gateway_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(default=8000, description="Gateway port.")
    gateway_database_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Longest a read API request or /readyz waits for PostgreSQL (connection, "
        "query and release together) before it answers 503.",
    )
    gateway_admin_port: int | None = Field(
        default=None,
        description="Port (same bind address) serving /metrics, /docs, /openapi.json and "
        "/asyncapi.json instead of the gateway port; unset: everything on the gateway port.",
    )
    gateway_max_header_bytes: int = Field(
        default=_LIMITS.max_header_bytes,
        ge=1024,
        description="Largest request line plus headers; larger requests get 431.",
    )
    gateway_header_timeout_seconds: float = Field(
        default=_LIMITS.header_timeout_seconds,
        gt=0,
        description="Time a client has to send a request's line and headers (408, closed).",
    )
    gateway_keep_alive_seconds: int = Field(
        default=_LIMITS.keep_alive_seconds,
        ge=1,
        description="How long an idle keep-alive connection stays open.",
    )
    gateway_body_timeout_seconds: float = Field(
        default=_LIMITS.body_timeout_seconds,
        gt=0,
        description="Time a client has to send a request's body once its head arrived (408, "
        "closed).",
    )
    gateway_shutdown_timeout_seconds: int = Field(
        default=_LIMITS.shutdown_timeout_seconds,
        ge=1,
        description="How long SIGTERM waits for in-flight requests before cancelling them.",
    )

    # -- read API (JWT) ----------------------------------------------------------------------
    jwt_hs256_secret: SecretStr | None = Field(
        default=None,
        description=f"Shared secret for HS256 bearer tokens (at least "
        f"{MIN_JWT_HS256_SECRET_BYTES} bytes; `dev` generates one unless this or the JWKS "
        "URL is set).",
    )
    jwt_jwks_url: str | None = Field(default=None, description="JWKS URL for RS256 bearer tokens.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of bearer tokens.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of bearer tokens.")
    jwt_service_scope: str = Field(
        default="entitlements:read:any",
        description="Scope that lets a service read any customer's entitlements.",
    )
    jwt_ledger_scope: str = Field(
        default="ledger:read:any",
        description="Scope that lets a service read any customer's invoices, payments, "
        "subscriptions and receipts.",
    )

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        return split_commas(value)

    @field_validator("jwt_hs256_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here so that the gateway refuses it at startup, not at the first token.
        size = len(value.get_secret_value().encode()) if value is not None else None
        if size is not None and size < MIN_JWT_HS256_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_JWT_HS256_SECRET_BYTES} bytes")
        return value

    def server_limits(self) -> ServerLimits:
        return ServerLimits(
            max_header_bytes=self.gateway_max_header_bytes,
            header_timeout_seconds=self.gateway_header_timeout_seconds,
            keep_alive_seconds=self.gateway_keep_alive_seconds,
            body_timeout_seconds=self.gateway_body_timeout_seconds,
            shutdown_timeout_seconds=self.gateway_shutdown_timeout_seconds,
        )
