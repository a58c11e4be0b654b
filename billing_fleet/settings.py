"""All configuration, read from the environment (prefix ``BILLING_``) by pydantic-settings.

``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` are also accepted unprefixed, the names
every platform already exports.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_JWT_HS256_SECRET_BYTES: Final = 32
"""RFC 7518 §3.2: an HS256 key at least as long as the hash output."""
POSTGRES_SCHEMES: Final = ("postgresql", "postgres")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    # -- servers ---------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BILLING_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means `dev` starts the embedded broker.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BILLING_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL DSN; unset means `dev` starts the embedded PostgreSQL.",
    )

    # -- Kafka producer ----------------------------------------------------------------------
    kafka_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer; on in production, off for brokers without it (Tansu).",
    )
    kafka_publish_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long the ingress waits for the broker's ack (aiokafka's request "
        "timeout; the gateway's own bound is 1 s more) before answering 503.",
    )
    kafka_topic_partitions: int = Field(
        default=6, ge=1, description="Partitions for topics the fleet creates."
    )
    kafka_topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor for topics the fleet creates."
    )

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
        default=1_048_576, ge=1024, description="Larger webhook bodies are refused with 413."
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
        default=65_536,
        ge=1024,
        description="Largest request line plus headers; larger requests get 431.",
    )
    gateway_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time a client has to send a request's line and headers (408, closed).",
    )
    gateway_keep_alive_seconds: int = Field(
        default=5, ge=1, description="How long an idle keep-alive connection stays open."
    )
    gateway_body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time a client has to send a request's body once its head arrived (408, "
        "closed).",
    )
    gateway_shutdown_timeout_seconds: int = Field(
        default=20,
        ge=1,
        description="How long SIGTERM waits for in-flight requests before cancelling them.",
    )

    # -- dev -----------------------------------------------------------------------------------
    dev_data_dir: Path = Field(
        default=Path(".billing-fleet"),
        description="Where `dev` keeps the embedded PostgreSQL data, the broker's log and, "
        "while it runs, dev.json (its servers, for commands in other terminals).",
    )
    dev_kafka_port: int = Field(default=9092, description="Port of the embedded broker in dev.")

    # -- workers ---------------------------------------------------------------------------
    worker_batch_max_records: int = Field(
        default=500, ge=1, description="Most messages a worker applies in one transaction."
    )
    worker_max_attempts: int = Field(
        default=3, ge=1, description="Attempts at a failing message before it is dead-lettered."
    )
    worker_retry_backoff_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.2, 1.0, 5.0],
        description="Comma-separated waits between attempts at a failing message.",
    )
    worker_dependency_backoff_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait between retries while PostgreSQL or Kafka is down.",
    )
    worker_database_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest one worker transaction (connection, batch, commit) may take before "
        "it is abandoned and retried as an outage; keep it under a third of the shutdown timeout.",
    )
    worker_http_port: int = Field(
        default=9100, description="Port of a worker's /healthz, /readyz and /metrics."
    )
    worker_shutdown_timeout_seconds: float = Field(
        default=20.0, gt=0, description="How long SIGTERM waits for in-flight work."
    )
    worker_lanes: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Transactions a worker runs at once on a batch, each over its own keys "
        "(customers): one computes while another waits for PostgreSQL.",
    )
    worker_fetch_wait_ms: int = Field(
        default=10,
        ge=1,
        le=5000,
        description="Longest wait of an idle fetch, at the broker and between empty polls.",
    )
    worker_session_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Kafka group session timeout: how soon a dead worker's partitions move.",
    )

    # -- deliveries (effects beyond Kafka) ----------------------------------------------------
    delivery_concurrency: int = Field(
        default=16, ge=1, le=1000, description="Sends a worker's delivery dispatcher runs at once."
    )
    delivery_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a claimed delivery stays leased to its dispatcher; a crashed "
        "dispatcher's rows are sent again after it. Longer than any channel's timeout.",
    )
    delivery_poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait of an idle dispatcher between two claims."
    )
    delivery_http_backoff_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [1.0, 5.0, 30.0, 120.0, 600.0],
        description="Comma-separated waits between attempts at an HTTP delivery whose "
        "endpoint is out (the last repeats; a longer Retry-After wins).",
    )
    delivery_http_max_attempts: int = Field(
        default=10, ge=1, description="Attempts at an HTTP delivery before it is dead."
    )
    delivery_http_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest one HTTP delivery may take (connect to answer)."
    )

    # -- entitlement worker -----------------------------------------------------------------
    entitlement_catalog_path: Path = Field(
        default=Path("catalog.example.yaml"),
        description="YAML catalog mapping Stripe prices/products to features.",
    )
    entitlement_past_due_grace_days: float = Field(
        default=3.0, ge=0, description="Days a past_due subscription keeps its access."
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

    log_level: str = Field(default="INFO", description="Log level of every process.")

    @field_validator(
        "stripe_webhook_secrets",
        "worker_retry_backoff_seconds",
        "delivery_http_backoff_seconds",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_hs256_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here so that every process refuses it at startup, not at the first token.
        size = len(value.get_secret_value().encode()) if value is not None else None
        if size is not None and size < MIN_JWT_HS256_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_JWT_HS256_SECRET_BYTES} bytes")
        return value

    @field_validator("delivery_http_backoff_seconds")
    @classmethod
    def _not_negative(cls, value: list[float]) -> list[float]:
        if not value or any(wait < 0 for wait in value):
            raise ValueError("must be one or more waits, none negative")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_send(self) -> Settings:
        if self.delivery_lease_seconds <= self.delivery_http_timeout_seconds:
            raise ValueError(
                "BILLING_DELIVERY_LEASE_SECONDS must be longer than "
                "BILLING_DELIVERY_HTTP_TIMEOUT_SECONDS (a send would outlive its lease)"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_postgres_url(value)
        return value


def check_postgres_url(url: str) -> None:
    """ValueError, naming the part, when ``url`` is not a PostgreSQL URL asyncpg can use.

    The messages never quote any part of the URL: a password with an unencoded '/', '?',
    '#' or '@' shifts the parts, so what looks like a port or a host may be the password.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed '[', or a bracketed part that is no IPv6 address
        raise ValueError(
            "not a URL: bracket only an IPv6 host, and percent-encode '[' and ']' in the password"
        ) from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            "must start with postgresql:// (e.g. postgresql://user:password@host:5432/dbname)"
        )
    # As asyncpg reads it: the user and password end at the first '@'.
    hosts = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
    if "@" in hosts:
        raise ValueError("the host part contains '@': percent-encode '@' in the password")
    # Several hosts are allowed (host1:5432,host2:5433); each port must be a number.
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, number = port.rpartition(":")
        if colon and not (number.isdigit() and 0 < int(number) < 65536):
            raise ValueError(
                "the host part has a port that is not a number from 1 to 65535: "
                "percent-encode '/', '?' and '#' in the password"
            )
    try:
        parse_qs(parts.query, strict_parsing=bool(parts.query))  # as asyncpg parses it
    except ValueError:
        raise ValueError(
            "the query part is not name=value pairs joined by '&': percent-encode '&' and "
            "'=' in its values"
        ) from None


@lru_cache
def get_settings() -> Settings:
    return Settings()
